#!/usr/bin/env python3
"""Benchmark (not a test): time from publishing the event that crosses a budget to the
webhook receiving the alert, on loopback services (scripts/services.sh), with a release build.

For each run: a fresh topic and database, a worker with a one-micro-dollar daily budget, a
local HTTP receiver; then one record is published and the clock runs until the receiver gets
the alert. Prints each run and the median, for the configured flush and evaluation intervals.

Usage: scripts/bench_alert_latency.py [--runs 5] [--flush-ms 1000] [--evaluate-ms 5000]
"""
import argparse
import http.server
import json
import os
import pathlib
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parent.parent
BIN = ROOT / "target/release/costline"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Receiver(http.server.BaseHTTPRequestHandler):
    arrivals = []

    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        Receiver.arrivals.append(time.time())
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def one_run(args, hook_port, run):
    tag = f"bench_alert_{int(time.time())}_{run}"
    config = tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False)
    config.write(f"""
[pipeline]
flush_interval_ms = {args.flush_ms}
[alerts]
evaluate_interval_ms = {args.evaluate_ms}
[[webhooks]]
id = "hook"
url = "http://127.0.0.1:{hook_port}/hook"
secret_env = "BENCH_SECRET"
[[budgets]]
id = "tiny"
period = "day"
limit_usd = "0.000001"
thresholds = [100]
webhooks = ["hook"]
""")
    config.close()
    env = dict(os.environ, COSTLINE_CONFIG=config.name, BENCH_SECRET="s", COSTLINE_KAFKA__TOPIC=tag,
               COSTLINE_KAFKA__GROUP_ID=tag, COSTLINE_CLICKHOUSE__DATABASE=tag,
               COSTLINE_KAFKA__SESSION_TIMEOUT_MS="6000", COSTLINE_HTTP__LISTEN=f"127.0.0.1:{free_port()}",
               COSTLINE_LOG__LEVEL="warn")
    subprocess.run([BIN, "produce", "--count", "0", "--partitions", "1"], env=env, check=True, capture_output=True)
    worker = subprocess.Popen([BIN, "run"], env=env, stderr=subprocess.DEVNULL)
    try:
        time.sleep(8)  # join the group and take partition 0 (the evaluator)
        Receiver.arrivals.clear()
        published = time.time()
        subprocess.run([BIN, "produce", "--count", "1", "--seed", str(run), "--no-create-topic"], env=env, check=True,
                       capture_output=True)
        deadline = published + 120
        while not Receiver.arrivals and time.time() < deadline:
            time.sleep(0.005)
        if not Receiver.arrivals:
            raise SystemExit(f"run {run}: no alert within 120 s")
        return Receiver.arrivals[0] - published
    finally:
        worker.terminate()
        worker.wait(timeout=60)
        os.unlink(config.name)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--flush-ms", type=int, default=1000)
    parser.add_argument("--evaluate-ms", type=int, default=5000)
    args = parser.parse_args()
    subprocess.run([ROOT / "scripts/services.sh", "up"], check=True, capture_output=True)
    subprocess.run(["cargo", "build", "--release", "--quiet", "-p", "costline"], cwd=ROOT, check=True)
    hook_port = free_port()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", hook_port), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    latencies = []
    for run in range(args.runs):
        latency = one_run(args, hook_port, run)
        latencies.append(latency)
        print(f"run {run}: {latency * 1000:.0f} ms from publish to webhook", flush=True)
    print(f"median {statistics.median(latencies) * 1000:.0f} ms over {args.runs} runs "
          f"(flush every {args.flush_ms} ms, evaluate every {args.evaluate_ms} ms)")


if __name__ == "__main__":
    sys.exit(main())
