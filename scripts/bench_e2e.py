#!/usr/bin/env python3
"""End-to-end benchmark (not a test), on loopback services started by scripts/services.sh.

1. Preloads N generated records (default 1,000,000; 4 partitions) into a fresh topic.
2. Baseline, same topic, same run: a bare rdkafka consumer that only counts records
   (`costline baseline-consume`).
3. costline: one worker (release build) from an empty database; throughput is measured from
   the first flush to the moment ClickHouse accounts for every record; peak RSS from /proc.
4. Latency: a second topic gets steady traffic at --latency-rate records/s while probe
   records are published one at a time; event-to-queryable latency is the time from a probe's
   publication until it is visible in usage_events (polled every 20 ms).

Usage: scripts/bench_e2e.py [--records 1000000] [--latency-rate 20000] [--probes 20]
Prints one summary block; BENCHMARKS.md records the results.
"""
import argparse
import json
import os
import pathlib
import socket
import statistics
import subprocess
import time
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parent.parent
BIN = str(ROOT / "target/release/costline")
CLICKHOUSE = "http://127.0.0.1:18123"


def query(database, sql):
    request = urllib.request.Request(f"{CLICKHOUSE}/?database={database}", data=sql.encode())
    try:
        return urllib.request.urlopen(request, timeout=30).read().decode().strip()
    except Exception:
        return ""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env_for(tag, **extra):
    env = dict(os.environ, COSTLINE_KAFKA__TOPIC=tag, COSTLINE_KAFKA__GROUP_ID=tag,
               COSTLINE_CLICKHOUSE__DATABASE=tag, COSTLINE_KAFKA__SESSION_TIMEOUT_MS="6000",
               COSTLINE_HTTP__LISTEN=f"127.0.0.1:{free_port()}", COSTLINE_LOG__LEVEL="warn")
    env.update(extra)
    return env


def accounted(database):
    value = query(database, "SELECT sum(counted + duplicates + rejected) FROM flushes")
    return int(value) if value.isdigit() else 0


def peak_rss_mib(pid):
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def throughput(args, tag):
    env = env_for(tag)
    started = time.time()
    out = subprocess.run([BIN, "produce", "--count", str(args.records), "--seed", "1", "--partitions", "4"],
                         env=env, check=True, capture_output=True, text=True).stdout.strip()
    print(f"preload: {out}", flush=True)
    baseline = subprocess.run([BIN, "baseline-consume", "--count", str(args.records)],
                              env=env, check=True, capture_output=True, text=True).stdout.strip()
    baseline_rate = float(baseline.rsplit(":", 1)[1].split()[0])
    print(baseline, flush=True)
    worker = subprocess.Popen([BIN, "run"], env=env, stderr=subprocess.DEVNULL)
    try:
        first_time, first_count = None, 0
        deadline = time.time() + 1800
        while time.time() < deadline:
            count = accounted(tag)
            now = time.time()
            if count > 0 and first_time is None:
                first_time, first_count = now, count
            if count >= args.records:
                break
            time.sleep(0.05)
        else:
            raise SystemExit(f"the worker did not finish: {accounted(tag)} of {args.records}")
        rss = peak_rss_mib(worker.pid)
    finally:
        worker.terminate()
        worker.wait(timeout=120)
    rate = (args.records - first_count) / max(now - first_time, 1e-9)
    return rate, baseline_rate, rss, time.time() - started


def latency(args, tag):
    env = env_for(tag)
    subprocess.run([BIN, "produce", "--count", "0", "--partitions", "4"], env=env, check=True, capture_output=True)
    worker = subprocess.Popen([BIN, "run"], env=env, stderr=subprocess.DEVNULL)
    duration = args.probes * 0.5 + 15
    load = subprocess.Popen([BIN, "produce", "--count", str(int(args.latency_rate * duration)), "--rate",
                             str(args.latency_rate), "--seed", "2", "--no-create-topic",
                             "--spacing-ms", str(1000 / args.latency_rate)],
                            env=env, stdout=subprocess.DEVNULL)
    latencies = []
    try:
        time.sleep(10)  # join, and let the steady load settle
        for probe in range(args.probes):
            seed = 1_000_000 + probe
            published = time.time()
            subprocess.run([BIN, "produce", "--count", "1", "--seed", str(seed), "--no-create-topic",
                            "--start-ms", str(int(published * 1000))], env=env, check=True, capture_output=True)
            request_id = f"req-{seed:x}-00000001"
            while time.time() - published < 30:
                if query(tag, f"SELECT count() FROM usage_events WHERE external_request_id = '{request_id}'") == "1":
                    latencies.append(time.time() - published)
                    break
                time.sleep(0.02)
            time.sleep(0.3)
    finally:
        load.terminate()
        worker.terminate()
        worker.wait(timeout=120)
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    return statistics.median(latencies), p99, len(latencies)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--latency-rate", type=int, default=20_000)
    parser.add_argument("--probes", type=int, default=20)
    args = parser.parse_args()
    subprocess.run([str(ROOT / "scripts/services.sh"), "up"], check=True, capture_output=True)
    subprocess.run(["cargo", "build", "--release", "--quiet", "-p", "costline"], cwd=ROOT, check=True)
    stamp = int(time.time())
    rate, baseline_rate, rss, elapsed = throughput(args, f"bench_e2e_{stamp}")
    p50, p99, probes = latency(args, f"bench_latency_{stamp}")
    print(json.dumps({
        "records": args.records,
        "costline_records_per_s": round(rate),
        "raw_consume_records_per_s": round(baseline_rate),
        "ratio_costline_to_raw_consume": round(rate / baseline_rate, 3),
        "worker_peak_rss_mib": round(rss, 1),
        "latency_rate_records_per_s": args.latency_rate,
        "event_to_queryable_p50_ms": round(p50 * 1000),
        "event_to_queryable_p99_ms": round(p99 * 1000),
        "latency_probes_seen": probes,
        "throughput_phase_seconds": round(elapsed, 1),
    }, indent=2))


if __name__ == "__main__":
    main()
