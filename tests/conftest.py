import os
import sys
from pathlib import Path

import pytest

# Make `tests.kafka_broker` importable however pytest is launched (`pytest` or
# `python -m pytest`, with or without tests/__init__.py): put the repo root on sys.path.
_REPO_ROOT = str(Path(__file__).resolve().parent.parent)
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)

from tests.kafka_broker import BrokerError, free_port, start_broker, stop_broker  # noqa: E402


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory):
    """Bootstrap address of a real Kafka broker for the whole test session.

    SEQMON_TEST_KAFKA (e.g. "127.0.0.1:9092") selects an already running broker;
    otherwise a fresh single-node broker is started on free ports in a pytest tmp
    dir (deploy/local/kafka.sh) and stopped at session end. Never skips: if the
    broker cannot start, the fixture fails with the broker log tail.
    """
    external = os.environ.get("SEQMON_TEST_KAFKA")
    if external:
        yield external
        return
    port = free_port()
    data_dir = str(tmp_path_factory.mktemp("kafka"))
    try:
        bootstrap = start_broker(port, data_dir)
    except BrokerError as exc:
        failure = f"could not start the test Kafka broker:\n{exc}"
    else:
        failure = None
    if failure:
        pytest.fail(failure, pytrace=False)
    try:
        yield bootstrap
    finally:
        stop_broker(port, data_dir)


@pytest.fixture(scope="session")
def bundle_path(tmp_path_factory):
    """A small seed-preset bundle, trained once per session, for the daemon and Prometheus tests."""
    from monitor.generate import SeedLikeGenerator
    from monitor.train import preset, train_bundle

    vec, mod = preset("seed", epochs=30)
    path = tmp_path_factory.mktemp("bundle") / "bundle"
    train_bundle(SeedLikeGenerator(21).normal(4000), path, vec, mod, verbose=0, log=lambda m: None)
    return path
