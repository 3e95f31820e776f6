"""Long fuzz run of ``seqmon run``: millions of random records through a real broker and the real daemon, and
nothing lost.

Fills a topic (4 partitions) with JSON records, most of them ordinary sequences around now and the rest fuzzed:
random bytes, invalid UTF-8, NUL bytes, huge lines, deeply nested or huge JSON, lone surrogate escapes, missing and
mistyped fields, tombstones (null values), NaN / inf / negative / huge / string event times and weights, ancient and
future record timestamps.
Then runs the daemon as deployed (a ``seqmon run`` process) until it has consumed every delivered record and checks,
from its Prometheus metrics, that

    consumed = delivered                      every record was read
    consumed = scored + invalid               every record was scored or has a reason (late ones are scored records
                                              whose window had closed: windowed = scored - late)
    the process never died                    it is alive at the end and exits 0 on SIGTERM

With ``--dead-letters`` the daemon also writes every refused record to a dead-letter topic, which must then hold
exactly invalid + late records. Prints figures; asserts nothing on time.

    python tests/bench/fuzz_daemon.py --records 2000000                  # starts its own broker on a free port
    python tests/bench/fuzz_daemon.py --records 200000 --dead-letters
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from monitor.generate import SeedLikeGenerator  # noqa: E402
from tests.kafka_broker import create_topic, free_port, start_broker, stop_broker  # noqa: E402

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS


def fuzzed_values(rng: random.Random, normal: list[str], n: int) -> list[bytes | None]:
    """``n`` distinct-ish record values of every kind (a pool that the topic cycles through)."""
    now = int(time.time() * 1000)
    odd_numbers = [float("nan"), float("inf"), -float("inf"), -1, 0, 10**30, -(10**30), 1e300, 2**63, 5e-324, 1.5]
    odd_stamps = odd_numbers + ["2026-01-01T00:00:00", "not a time", "", "\x00", "0001-01-01T00:00:00+05:00",
                                "9999-12-31T23:59:59-23:59", "1960-01-01T00:00:00Z", None, True, [now]]
    odd_weights = odd_numbers + [0, -3, "2", None, True, {"w": 1}, 1e13]
    out = []
    for _ in range(n):
        kind = rng.random()
        seq = rng.choice(normal)
        if kind < 0.6:  # ordinary records, event time within the last hours (the daemon's bread and butter)
            doc = {"sequence": seq, "ts": now - rng.randrange(0, 6 * HOUR_MS)}
            if rng.random() < 0.3:
                doc["weight"] = rng.choice([1, 2, 0.5, 10])
            out.append(json.dumps(doc).encode())
        elif kind < 0.64:
            out.append(rng.randbytes(rng.randrange(0, 200)))
        elif kind < 0.67:  # invalid UTF-8 and NUL bytes inside otherwise good JSON
            out.append(json.dumps({"sequence": seq}).encode().replace(b" ", rng.choice([b"\xff", b"\xc3", b"\x00", b" \x00"]), 1))
        elif kind < 0.68:  # huge lines: past max_bytes, up to 200 KB
            out.append(json.dumps({"sequence": (seq + " ") * rng.randrange(200, 8000)}).encode())
        elif kind < 0.70:  # deeply nested
            depth = rng.randrange(500, 5000)
            out.append(b'{"sequence":"DF 36","x":' + b"[" * depth + b"]" * depth + b"}")
        elif kind < 0.72:  # lone surrogates, escaped pairs, control characters
            out.append(rng.choice([b'{"sequence":"DF \\ud800 36"}', b'{"sequence":"DF \\ud83d\\udca5"}',
                                   b'{"sequence":"\\u0000\\u0001 DF"}', b'{"sequence":"\\udfff"}']))
        elif kind < 0.80:  # odd event times
            out.append(json.dumps({"sequence": seq, "ts": rng.choice(odd_stamps)}, allow_nan=True).encode())
        elif kind < 0.86:  # odd weights
            out.append(json.dumps({"sequence": seq, "weight": rng.choice(odd_weights), "ts": now}, allow_nan=True).encode())
        elif kind < 0.90:  # missing or mistyped fields, empty values
            out.append(rng.choice([b"{}", b"[]", b"null", b'""', b'{"sequence":null}', b'{"sequence":42}',
                                   b'{"sequence":""}', b'{"sequence":"!!! ..."}', b"", b'{"seq":"DF 36"}', None]))  # None: a tombstone
        elif kind < 0.94:  # truncated JSON
            full = json.dumps({"sequence": seq, "ts": now})
            out.append(full[: rng.randrange(0, len(full))].encode())
        else:  # plain text where JSON is expected
            out.append(seq.encode())
    return out


def record_timestamp(rng: random.Random, now_ms: int) -> int:
    """The Kafka record timestamp: mostly now, some old (the daemon's past bound) and some ahead (its future bound)."""
    r = rng.random()
    if r < 0.9:
        return now_ms - rng.randrange(0, HOUR_MS)
    if r < 0.95:
        return rng.choice([1, 86_400_000, now_ms - 40 * DAY_MS, now_ms - 29 * DAY_MS])
    return now_ms + rng.randrange(0, 50 * 60_000)  # the broker refuses timestamps more than an hour ahead


def produce(bootstrap: str, topic: str, pool: list[bytes | None], records: int, seed: int) -> int:
    """Send ``records`` values cycling through ``pool``; the number the broker acknowledged."""
    from confluent_kafka import Producer  # noqa: PLC0415

    rng = random.Random(seed)
    delivered, failed = 0, Counter()

    def report(err, _msg):
        nonlocal delivered
        if err is None:
            delivered += 1
        else:
            failed[str(err.name())] += 1

    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 50, "batch.size": 1_000_000,
                         "queue.buffering.max.messages": 1_000_000, "message.max.bytes": 1_000_000,
                         "compression.type": "lz4"})
    now = int(time.time() * 1000)
    for i in range(records):
        while True:
            try:
                producer.produce(topic, pool[i % len(pool)], partition=i % 4, timestamp=record_timestamp(rng, now),
                                 on_delivery=report)
                break
            except BufferError:
                producer.poll(0.1)
        if i % 10_000 == 0:
            producer.poll(0)
    producer.flush(120)
    if failed:
        print(f"  the broker refused {sum(failed.values()):,} records: {dict(failed)}")
    return delivered


def scrape(port: int) -> dict[str, float]:
    """Counter name (with labels) -> value, summed over topics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out: Counter = Counter()
    for line in text.splitlines():
        if line.startswith("seqmon_records_"):
            name, value = line.rsplit(" ", 1)
            base = name.split("{", 1)[0]
            reason = name.split('reason="', 1)[1].split('"', 1)[0] if 'reason="' in name else None
            out[base if reason is None else f"{base}:{reason}"] += float(value)
    return dict(out)


def count_dead_letters(bootstrap: str, topic: str) -> Counter:
    from confluent_kafka import Consumer, TopicPartition  # noqa: PLC0415

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"fuzz-{uuid.uuid4().hex[:6]}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    try:
        meta = consumer.list_topics(topic, timeout=30).topics[topic]
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1] for p in meta.partitions}
        consumer.assign([TopicPartition(topic, p, 0) for p in ends])
        reasons: Counter = Counter()
        left = sum(ends.values())
        while left > 0:
            for msg in consumer.consume(10_000, timeout=5):
                if msg.error():
                    continue
                reasons[dict(msg.headers() or []).get("seqmon-reason", b"?").decode()] += 1
                left -= 1
        return reasons
    finally:
        consumer.close()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--records", type=int, default=2_000_000)
    p.add_argument("--pool", type=int, default=200_000, help="distinct fuzzed values the topic cycles through")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--bootstrap", help="use this broker instead of starting one")
    p.add_argument("--client", choices=("kafka-python", "confluent"), default="confluent", help="kafka.client of the daemon")
    p.add_argument("--dead-letters", action="store_true", help="also check the dead-letter topic holds every refused record")
    args = p.parse_args()

    work = Path(tempfile.mkdtemp(prefix="seqmon-fuzz-daemon-"))
    broker_port, bootstrap = None, args.bootstrap
    if bootstrap is None:
        broker_port = free_port()
        bootstrap = start_broker(broker_port, str(work / "kafka"))
    daemon, passed = None, False
    try:
        topic = f"fuzz-{uuid.uuid4().hex[:6]}"
        dlq = f"{topic}-dead"
        create_topic(bootstrap, topic, 4)
        if args.dead_letters:
            create_topic(bootstrap, dlq, 1)
        rng = random.Random(args.seed)
        normal = SeedLikeGenerator(args.seed).normal(20_000)
        pool = fuzzed_values(rng, normal, args.pool)
        print(f"filling {topic} with {args.records:,} records from a pool of {len(pool):,} fuzzed values ...", flush=True)
        t0 = time.perf_counter()
        delivered = produce(bootstrap, topic, pool, args.records, args.seed)
        print(f"  {delivered:,} delivered in {time.perf_counter() - t0:.0f} s")

        bundle = work / "bundle"
        code = f"from monitor.bench import _untrained_bundle; _untrained_bundle(0, {str(bundle)!r})"
        subprocess.run([sys.executable, "-c", code], check=True, stderr=subprocess.DEVNULL, cwd=REPO)
        metrics_port = free_port()
        sets = [f"kafka.bootstrap_servers={bootstrap}", f"kafka.topics={topic}", f"kafka.group_id=fuzz-{uuid.uuid4().hex[:6]}",
                f"kafka.client={args.client}", f"model.bundle={bundle}", f"state.directory={work / 'state'}",
                f"metrics.port={metrics_port}", "model.watch_interval_seconds=0", "records.format=json",
                "records.timestamp_field=ts", "log.level=WARNING"]
        if args.dead_letters:
            sets.append(f"kafka.dead_letter_topic={dlq}")
        log = open(work / "daemon.log", "w")  # noqa: SIM115
        daemon = subprocess.Popen([sys.executable, "-m", "monitor.cli", "run", *[a for s in sets for a in ("--set", s)]],
                                  cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        t0 = time.perf_counter()
        figures: dict[str, float] = {}
        print(f"{'seconds':>8} {'consumed':>12} {'records/s':>10}", flush=True)
        last_t, last_n = t0, 0.0
        while daemon.poll() is None:
            time.sleep(5)
            try:
                figures = scrape(metrics_port)
            except OSError:
                continue
            n, now = figures.get("seqmon_records_consumed_total", 0.0), time.perf_counter()
            print(f"{now - t0:>8.0f} {n:>12,.0f} {(n - last_n) / (now - last_t):>10,.0f}", flush=True)
            last_t, last_n = now, n
            if n >= delivered:
                time.sleep(2)  # the counters of the last batch are incremented one after another
                figures = scrape(metrics_port)
                break
        alive = daemon.poll() is None
        elapsed = time.perf_counter() - t0
        if alive:
            daemon.send_signal(signal.SIGTERM)
        code = daemon.wait(timeout=120)
        daemon = None

        consumed = figures.get("seqmon_records_consumed_total", 0.0)
        scored = figures.get("seqmon_records_scored_total", 0.0)
        late = figures.get("seqmon_records_late_total", 0.0)
        invalid = {k.split(":", 1)[1]: v for k, v in figures.items() if k.startswith("seqmon_records_invalid_total:")}
        n_invalid = sum(invalid.values())
        print(f"consumed {consumed:,.0f} in {elapsed:.0f} s ({consumed / elapsed:,.0f} records/s): windowed "
              f"{scored - late:,.0f} + late {late:,.0f} + invalid {n_invalid:,.0f} "
              f"({', '.join(f'{k} {v:,.0f}' for k, v in sorted(invalid.items(), key=lambda kv: -kv[1]) if v)})")
        checks = {
            "consumed = delivered": consumed == delivered,
            "consumed = scored + invalid": consumed == scored + n_invalid,
            "late <= scored": 0 <= late <= scored,
            "the daemon was alive at the end": alive,
            "the daemon exited 0 on SIGTERM": code == 0,
        }
        if args.dead_letters:
            dead = count_dead_letters(bootstrap, dlq)
            expected = Counter({k: int(v) for k, v in invalid.items() if v})
            if late:
                expected["late"] = int(late)
            print(f"dead letters: {sum(dead.values()):,} ({dict(dead)})")
            checks["dead letters = invalid + late, by reason"] = dead == expected
        state = sum(f.stat().st_size for f in (work / "state").rglob("*") if f.is_file())
        print(f"state directory after the run: {state / 1024:,.0f} KiB")
        for name, ok in checks.items():
            print(f"  {'ok  ' if ok else 'FAIL'} {name}")
        if not all(checks.values()):
            print(f"daemon log: {work / 'daemon.log'}")
            print((work / "daemon.log").read_text()[-3000:])
            return 1
        passed = True
        return 0
    finally:
        if daemon is not None:
            daemon.kill()
            daemon.wait()
        if broker_port is not None:
            stop_broker(broker_port, str(work / "kafka"))
        if passed:  # a failed run keeps its directory: the daemon log and the broker's data
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
