"""End-to-end benchmark of ``seqmon run``: Kafka topic (4 partitions by default) → decode → score → windows → metrics.

Prints records/s while it catches up with a pre-filled topic, the lag, and the process RSS. Asserts nothing on time.

    python tests/bench/bench_daemon.py --records 10000000            # starts its own broker on a free port
    python tests/bench/bench_daemon.py --records 2000000 --profile   # also prints where the time goes
    python tests/bench/bench_daemon.py --records 10000000 --daemons 2  # `seqmon run` processes in one group
    python tests/bench/bench_daemon.py --records 5000000 --client confluent  # kafka.client = "confluent"
    python tests/bench/bench_daemon.py --records 2000000 --partitions 6 --daemons 3 --changelog  # fleet mode

The topic is filled by Kafka's own ProducerPerformance tool (kafka-python's producer is the slow side, ~30k/s) from a
payload file of seed-like sequences, 1 % of them abnormal.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from prometheus_client import CollectorRegistry  # noqa: E402

from monitor.config import load_settings  # noqa: E402
from monitor.daemon.run import Daemon  # noqa: E402
from monitor.generate import SeedLikeGenerator  # noqa: E402
from tests.kafka_broker import create_topic, free_port, start_broker, stop_broker  # noqa: E402


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def fill_topic(bootstrap: str, topic: str, records: int, payload: Path) -> float:
    libs = REPO / "deploy" / "local" / ".kafka" / "libs"
    started = time.perf_counter()
    subprocess.run(
        [
            "java", "-Xmx512m", "-cp", f"{libs}/*", "org.apache.kafka.tools.ProducerPerformance",
            "--topic", topic, "--num-records", str(records), "--throughput", "-1", "--payload-file", str(payload),
            "--producer-props", f"bootstrap.servers={bootstrap}", "linger.ms=50", "batch.size=1048576", "acks=1",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return records / (time.perf_counter() - started)


def scrape_consumed(port: int) -> float:
    import urllib.request  # noqa: PLC0415

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return 0.0
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("seqmon_records_consumed_total{"))


def process_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def fleet_settings(args, group: str) -> list[str]:
    """``--set`` flags of fleet mode (one changelog topic per group), or none."""
    return ["--set", f"state.changelog_topic={group}-changelog"] if args.changelog else []


def run_processes(args, bootstrap: str, topic: str, bundle: Path, work: Path) -> None:
    """N daemons as deployed (`seqmon run` processes, one consumer group); records/s summed from their metrics."""
    group = f"bench-{uuid.uuid4().hex[:6]}"
    procs, ports = [], []
    for i in range(args.daemons):
        port = free_port()
        ports.append(port)
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "monitor.cli", "run", "--set", f"kafka.bootstrap_servers={bootstrap}",
             "--set", f"kafka.topics={topic}", "--set", f"kafka.group_id={group}", "--set", f"model.bundle={bundle}",
             "--set", f"state.directory={work / f'state-{i}'}", "--set", f"metrics.port={port}",
             "--set", "model.watch_interval_seconds=0", "--set", "window.max_future_seconds=86400", "--set", "log.level=WARNING",
             "--set", f"kafka.client={args.client}", *fleet_settings(args, group)],
            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        ))
    try:
        t0 = time.perf_counter()
        last_t, last_n, peak = t0, 0.0, 0.0
        print(f"{'seconds':>8} {'consumed':>12} {'records/s':>10} {'RSS MiB per daemon':>20}", flush=True)
        while True:
            time.sleep(5)
            n, now = sum(scrape_consumed(p) for p in ports), time.perf_counter()
            rss = [process_rss_mib(p.pid) for p in procs]
            peak = max(peak, *rss)
            print(f"{now - t0:>8.0f} {n:>12,.0f} {(n - last_n) / (now - last_t):>10,.0f} {' '.join(f'{r:.0f}' for r in rss):>20}", flush=True)
            last_t, last_n = now, n
            if n >= args.records:
                print(f"caught up: {n:,.0f} records in {now - t0:.1f} s (group joins included) = {n / (now - t0):,.0f} records/s; peak RSS {peak:,.0f} MiB per daemon")
                return
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=60)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--records", type=int, default=10_000_000)
    p.add_argument("--bootstrap", help="use this broker instead of starting one")
    p.add_argument("--profile", action="store_true", help="run the daemon under cProfile and print the top functions")
    p.add_argument("--daemons", type=int, default=0, help="run N `seqmon run` processes in one group instead (scraped over HTTP)")
    p.add_argument("--client", choices=("kafka-python", "confluent"), default="kafka-python", help="kafka.client of the daemon(s)")
    p.add_argument("--partitions", type=int, default=4, help="partitions of the topic")
    p.add_argument("--changelog", action="store_true",
                   help="fleet mode: window state in a changelog topic (state.changelog_topic), fleet-wide windows")
    args = p.parse_args()

    work = Path(tempfile.mkdtemp(prefix="seqmon-bench-daemon-"))
    port = None
    bootstrap = args.bootstrap
    if bootstrap is None:
        port = free_port()
        bootstrap = start_broker(port, str(work / "kafka"))
    try:
        topic = f"bench-{uuid.uuid4().hex[:6]}"
        create_topic(bootstrap, topic, args.partitions)
        gen = SeedLikeGenerator(7)
        lines = gen.normal(99_000) + gen.abnormal(1_000, "unknown")
        payload = work / "payload.txt"
        payload.write_text("\n".join(lines) + "\n")
        print(f"filling {topic} ({args.partitions} partitions) with {args.records:,} records ...", flush=True)
        rate = fill_topic(bootstrap, topic, args.records, payload)
        print(f"  ProducerPerformance: {rate:,.0f} records/s")

        bundle = work / "bundle"
        code = f"from monitor.bench import _untrained_bundle; _untrained_bundle(0, {str(bundle)!r})"
        subprocess.run([sys.executable, "-c", code], check=True, stderr=subprocess.DEVNULL, cwd=REPO)
        settings = load_settings(None, env={}, overrides=[
            f"kafka.bootstrap_servers={bootstrap}", f"kafka.topics={topic}", f"kafka.group_id=bench-{uuid.uuid4().hex[:6]}",
            "kafka.session_timeout_ms=10000", "kafka.heartbeat_interval_ms=2000", f"model.bundle={bundle}",
            f"state.directory={work / 'state'}", "model.watch_interval_seconds=0", f"metrics.port={free_port()}",
            "window.max_future_seconds=86400", f"kafka.client={args.client}",
            *([f"state.changelog_topic=bench-{uuid.uuid4().hex[:6]}-changelog"] if args.changelog else []),
        ])
        if args.daemons:
            run_processes(args, bootstrap, topic, bundle, work)
            return
        daemon = Daemon(settings, registry=CollectorRegistry())
        daemon.start()
        consumed = lambda: daemon.registry.get_sample_value("seqmon_records_consumed_total", {"topic": topic}) or 0.0  # noqa: E731

        def watch():
            t0 = time.perf_counter()
            last_t, last_n, peak = t0, 0.0, 0.0
            print(f"{'seconds':>8} {'consumed':>12} {'records/s':>10} {'lag':>12} {'RSS MiB':>8}", flush=True)
            while True:
                time.sleep(5)
                n, now = consumed(), time.perf_counter()
                # The daemon's own lag gauge: asking its consumer from this thread would contend with its poll
                # (confluent-kafka serializes the calls on one client; a 10 s stall was seen).
                lag = sum(
                    s.value for m in daemon.registry.collect() if m.name == "seqmon_consumer_lag_records" for s in m.samples
                )
                peak = max(peak, rss_mib())
                print(f"{now - t0:>8.0f} {n:>12,.0f} {(n - last_n) / (now - last_t):>10,.0f} {lag:>12,.0f} {rss_mib():>8.0f}", flush=True)
                last_t, last_n = now, n
                if n >= args.records:
                    print(f"caught up: {n:,.0f} records in {now - t0:.1f} s = {n / (now - t0):,.0f} records/s; peak RSS {peak:,.0f} MiB")
                    daemon.stop()
                    return

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        if args.profile:
            profiler = cProfile.Profile()
            profiler.runcall(daemon.run)
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(25)
            print(out.getvalue())
        else:
            daemon.run()
        watcher.join()
    finally:
        if port is not None:
            stop_broker(port, str(work / "kafka"))


if __name__ == "__main__":
    main()
