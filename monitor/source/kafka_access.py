"""Why Kafka refused the daemon, in one sentence: the translation both Kafka clients share.

A failed login, an untrusted broker certificate or a missing ACL right cannot heal by retrying, yet both clients retry
them (kafka-python until its bootstrap timeout, librdkafka forever). The sources stop at the first one and raise
``KafkaAccessError`` with one of these messages, which name the setting to fix or the ACL right to grant (the rights
are listed in README, "Kafka security").
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterable

from monitor.errors import KafkaAccessError

__all__ = [
    "FailureWatch",
    "authentication_failed",
    "built",
    "create_not_authorized",
    "denied_topics",
    "describe_configs_not_authorized",
    "group_not_authorized",
    "kafka_python_refusals",
    "read_not_authorized",
    "tls_failed",
    "write_not_authorized",
]


def _user(config: dict) -> str:
    name = config.get("sasl_plain_username") or config.get("sasl.username")
    return f"user {name!r}" if name else "the client"


def authentication_failed(config: dict, detail: str) -> KafkaAccessError:
    mechanism = config.get("sasl_mechanism") or config.get("sasl.mechanism") or "SASL"
    return KafkaAccessError(
        f"Kafka authentication of {_user(config)} ({mechanism}) failed: check kafka.sasl_plain_username and "
        f"kafka.sasl_plain_password ({detail.strip()})"
    )


def tls_failed(config: dict, detail: str) -> KafkaAccessError:
    cafile = config.get("ssl_cafile") or config.get("ssl.ca.location")
    if "certificate verify failed" not in detail.lower():
        protocol = config.get("security_protocol") or config.get("security.protocol")
        return KafkaAccessError(
            f"TLS connection to Kafka failed: check that the brokers' listener speaks kafka.security_protocol "
            f"{protocol} ({detail.strip()})"
        )
    trust = f"kafka.ssl_cafile ({cafile})" if cafile else "the system's CA certificates (kafka.ssl_cafile is empty)"
    return KafkaAccessError(
        f"TLS connection to Kafka failed: the broker's certificate is not trusted by {trust}; set kafka.ssl_cafile "
        f"to the CA that signed it ({detail.strip()})"
    )


def unreachable(config: dict, detail: str) -> KafkaAccessError:
    servers = config.get("bootstrap_servers") or config.get("bootstrap.servers") or "?"
    if not isinstance(servers, str):
        servers = ",".join(servers)
    protocol = config.get("security_protocol") or config.get("security.protocol") or "PLAINTEXT"
    return KafkaAccessError(
        f"cannot connect to Kafka at {servers} ({protocol}): no broker answered before the bootstrap timeout; check "
        f"kafka.bootstrap_servers, that the brokers are up, and kafka.security_protocol ({detail.strip()})"
    )


def read_not_authorized(config: dict, topics: list[str], setting: str = "") -> KafkaAccessError:
    names = ", ".join(repr(t) for t in sorted(topics))
    where = f" ({setting})" if setting else ""
    return KafkaAccessError(
        f"Kafka {_user(config)} may not read topic {names}{where}: grant it the READ right on the topic "
        "(ACL operation READ, resource TOPIC)"
    )


def group_not_authorized(config: dict) -> KafkaAccessError:
    group = config.get("group_id") or config.get("group.id")
    return KafkaAccessError(
        f"Kafka {_user(config)} may not use consumer group {group!r} (kafka.group_id): grant it the READ right on the "
        "group (ACL operation READ, resource GROUP)"
    )


def write_not_authorized(config: dict, topic: str, setting: str) -> KafkaAccessError:
    return KafkaAccessError(
        f"Kafka {_user(config)} may not write to topic {topic!r} ({setting}): grant it the WRITE right on the topic "
        "(ACL operation WRITE, resource TOPIC)"
    )


def describe_configs_not_authorized(config: dict, topic: str, setting: str) -> KafkaAccessError:
    return KafkaAccessError(
        f"Kafka {_user(config)} may not read the settings of topic {topic!r} ({setting}), which seqmon checks for "
        "cleanup.policy=compact: grant it the DESCRIBE_CONFIGS right on the topic (ACL operation DESCRIBE_CONFIGS, "
        "resource TOPIC)"
    )


def create_not_authorized(config: dict, topic: str, setting: str) -> KafkaAccessError:
    return KafkaAccessError(
        f"topic {topic!r} ({setting}) does not exist, or Kafka {_user(config)} may not see it, and it may not create "
        "it: create it compacted (cleanup.policy=compact) and grant the user READ, WRITE and DESCRIBE_CONFIGS on it, "
        "or grant it the CREATE right on the topic (ACL operation CREATE, resource TOPIC)"
    )


def denied_topics(exc: BaseException) -> list[str]:
    """The topics a kafka-python ``TopicAuthorizationFailedError`` names: its producer passes a name, its consumer a
    set of names."""
    out: set[str] = set()
    for arg in exc.args:
        if isinstance(arg, str):
            out.add(arg)
        elif isinstance(arg, (set, frozenset, list, tuple)):
            out.update(str(a) for a in arg)
    return sorted(out)


_TLS_MARKERS = ("certificate verify failed", "certificate_verify_failed", "wrong version number", "ssl handshake")


class FailureWatch(logging.Handler):
    """Catches the first authentication or TLS failure a Kafka client logs (as the argument of a log record).

    kafka-python reports such failures only in its log while it retries bootstrapping, and raises a plain timeout
    ``bootstrap_timeout_ms`` later; watching its log lets the caller stop at the first one.
    """

    def __init__(self, config: dict, authentication_errors: tuple[type[BaseException], ...]):
        super().__init__(logging.DEBUG)
        self._config = config
        self._authentication_errors = authentication_errors
        self.failure: KafkaAccessError | None = None
        self.seen = threading.Event()
        # Connections the brokers closed after TLS was up: with SASL, what a refused login looks like when the
        # client reads the close before the broker's error response (kafka-python 3 does, now and then).
        self.closed_after_connect = 0

    def emit(self, record: logging.LogRecord) -> None:
        if self.failure is not None:
            return
        if str(record.msg).endswith("socket disconnected") and record.name.startswith("kafka.net.transport"):
            self.closed_after_connect += 1
        args = record.args if isinstance(record.args, tuple) else ()
        for arg in args:
            if not isinstance(arg, BaseException):
                continue
            if isinstance(arg, self._authentication_errors):
                self.failure = authentication_failed(self._config, _detail(arg))
            elif any(marker in str(arg).lower() for marker in _TLS_MARKERS):
                self.failure = tls_failed(self._config, str(arg))
            else:
                continue
            self.seen.set()
            return


def _detail(exc: BaseException) -> str:
    # kafka-python repeats the class name in the message ("[Error 58] SaslAuthenticationFailedError: ...").
    text = str(exc)
    return text.rsplit(": ", 1)[-1] if "Error" in text.split(":", 1)[0] else text


# --- kafka-python ------------------------------------------------------------------------------------------------------


def built(factory, config: dict):
    """``factory(**config)`` (a kafka-python client), stopped at the first authentication or TLS failure.

    kafka-python retries those while it bootstraps, logging each attempt, and then raises a bare timeout; the client
    is built on a worker thread while its log is watched, and at the first such failure its network client is closed
    (which ends the retries) and ``KafkaAccessError`` raised.
    """
    from kafka import errors as kafka_errors  # noqa: PLC0415

    watch = FailureWatch(config, (kafka_errors.SaslAuthenticationFailedError,))
    done = threading.Event()
    outcome: dict = {}
    networks: list = []
    network_class = factory.DEFAULT_CONFIG.get("kafka_client")

    def network(**kwargs):
        networks.append(network_class(**kwargs))
        return networks[-1]

    def build():
        try:
            outcome["client"] = factory(**config, **({"kafka_client": network} if network_class else {}))
        except BaseException as exc:  # handed to the caller
            outcome["error"] = exc
        finally:
            done.set()
            watch.seen.set()

    kafka_logger = logging.getLogger("kafka")
    kafka_logger.addHandler(watch)
    try:
        threading.Thread(target=build, name="seqmon-kafka-bootstrap", daemon=True).start()
        watch.seen.wait()
        if not done.is_set() and watch.failure is not None:
            # Closing the client's network under its own IO loop can make kafka-python log a traceback of its own
            # ("generator already executing"); the failure is known and said in one line, so its noise stays out.
            level = kafka_logger.level
            kafka_logger.setLevel(logging.CRITICAL)
            try:
                for net in networks:
                    with contextlib.suppress(Exception):
                        net.close()
                done.wait(10)  # its last log lines come before the error, not after
            finally:
                kafka_logger.setLevel(level)
            if "client" in outcome:
                with contextlib.suppress(Exception):
                    outcome["client"].close()
            raise watch.failure
    finally:
        kafka_logger.removeHandler(watch)
    if "error" in outcome:
        if watch.failure is not None:
            raise watch.failure from None
        sasl = str(config.get("security_protocol", "")).startswith("SASL")
        if isinstance(outcome["error"], kafka_errors.KafkaTimeoutError) and sasl and watch.closed_after_connect:
            raise authentication_failed(config, (
                f"the brokers closed all {watch.closed_after_connect} connections during the login, and answered "
                "nothing else before the bootstrap timeout"
            )) from None
        if isinstance(outcome["error"], kafka_errors.KafkaTimeoutError):
            # Nothing refused the connection in time, so nothing more specific can be said; still one line, not a trace.
            raise unreachable(config, _detail(outcome["error"])) from None
        raise outcome["error"]
    return outcome["client"]


@contextlib.contextmanager
def kafka_python_refusals(config: dict, topics: Iterable[str] = ()):
    """kafka-python's refusals (failed login, missing ACL right) as ``KafkaAccessError``: retrying cannot heal them."""
    from kafka import errors as kafka_errors  # noqa: PLC0415

    try:
        yield
    except kafka_errors.GroupAuthorizationFailedError:
        raise group_not_authorized(config) from None
    except kafka_errors.TopicAuthorizationFailedError as exc:
        denied = denied_topics(exc) or list(topics)
        raise read_not_authorized(config, denied) from None
    except kafka_errors.SaslAuthenticationFailedError as exc:
        raise authentication_failed(config, str(exc)) from None
