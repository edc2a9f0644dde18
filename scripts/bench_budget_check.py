#!/usr/bin/env python3
"""Benchmark (not a test): latency of the guardrail check, `GET /v1/budgets/check`, at a fixed
request rate against a release worker on loopback services (scripts/services.sh).

The worker counts a generated corpus under a set of budgets of mixed scopes (tenants, endpoint
prefixes, models; warn and block), then one client sends checks for a rotating set of calls
at `--rate` requests/s over one keep-alive connection for `--seconds`. Each latency is taken
from the request's scheduled send time to its full response, so a slow answer also counts
against the requests queued behind it (no coordinated omission). The client's own time
(Python building the request and parsing the JSON) is included: the figures are an upper
bound for the server.

Usage: scripts/bench_budget_check.py [--rate 1000] [--seconds 30] [--budgets 60]
"""
import argparse
import http.client
import json
import os
import pathlib
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse

ROOT = pathlib.Path(__file__).resolve().parent.parent
BIN = ROOT / "target/release/costline"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def budgets_toml(count, tenants, endpoints, models):
    """`count` budgets cycling through scopes by tenant, endpoint prefix and model."""
    out = []
    for i in range(count):
        kind = i % 3
        if kind == 0:
            scope = f'tenant = "{tenants[i % len(tenants)]}"'
        elif kind == 1:
            scope = f'endpoint_tag = "{endpoints[i % len(endpoints)].split(".")[0]}.*"'
        else:
            provider, model = models[i % len(models)]
            scope = f'provider = "{provider}", model = "{model}"'
        period = ["day", "week", "month"][i % 3]
        limit = ["0.50", "5.00", "500.00"][(i // 3) % 3]
        action = "block" if i % 2 else "warn"
        out.append(f'[[budgets]]\nid = "b{i}"\nperiod = "{period}"\nlimit_usd = "{limit}"\n'
                   f'on_exceeded = "{action}"\nscope = {{ {scope} }}\n')
    return "\n".join(out)


def corpus_values(record_file):
    tenants, endpoints, models = set(), set(), set()
    with open(record_file) as f:
        for line in f:
            payload = json.loads(line).get("payload")
            try:
                event = json.loads(payload) if payload else None
            except ValueError:
                continue
            if not isinstance(event, dict) or "endpointTag" not in event:
                continue
            tenants.add(event.get("userId", ""))
            endpoints.add(event["endpointTag"])
            models.add((str(event.get("provider", "")).lower(), event.get("model", "")))
    plain = lambda values: sorted(v for v in values if v.isascii() and v.isprintable() and '"' not in v)  # noqa: E731
    return plain(tenants)[:50], plain(endpoints), sorted(m for m in models if all(plain([v]) for v in m))


def percentile(sorted_values, p):
    return sorted_values[min(len(sorted_values) - 1, int(p / 100 * len(sorted_values)))]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--budgets", type=int, default=60)
    args = parser.parse_args()
    subprocess.run([ROOT / "scripts/services.sh", "up"], check=True, capture_output=True)
    subprocess.run(["cargo", "build", "--release", "--quiet", "-p", "costline"], cwd=ROOT, check=True)
    tag = f"bench_check_{int(time.time())}"
    port = free_port()
    env = dict(os.environ, COSTLINE_KAFKA__TOPIC=tag, COSTLINE_KAFKA__GROUP_ID=tag,
               COSTLINE_CLICKHOUSE__DATABASE=tag, COSTLINE_KAFKA__SESSION_TIMEOUT_MS="6000",
               COSTLINE_HTTP__LISTEN=f"127.0.0.1:{port}", COSTLINE_LOG__LEVEL="warn")
    with tempfile.TemporaryDirectory() as scratch:
        record_file = os.path.join(scratch, "records.jsonl")
        subprocess.run([BIN, "produce", "--count", "20000", "--record", record_file], env=env, check=True,
                       capture_output=True)
        tenants, endpoints, models = corpus_values(record_file)
        config = os.path.join(scratch, "costline.toml")
        with open(config, "w") as f:
            f.write(budgets_toml(args.budgets, tenants, endpoints, models))
        env["COSTLINE_CONFIG"] = config
        worker = subprocess.Popen([BIN, "run"], env=env, stderr=open(os.path.join(scratch, "worker.log"), "w"))
        try:
            return measure(args, port, tenants, endpoints, models, os.path.join(scratch, "worker.log"))
        finally:
            worker.terminate()
            worker.wait(timeout=60)


def measure(args, port, tenants, endpoints, models, worker_log):
    paths = []
    for i in range(200):
        provider, model = models[i % len(models)]
        query = {"tenant": tenants[i % len(tenants)], "endpoint_tag": endpoints[i % len(endpoints)],
                 "prompt_version": "v1", "provider": provider, "model": model}
        paths.append("/v1/budgets/check?" + urllib.parse.urlencode(query))
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    deadline = time.time() + 60
    response = None
    while True:  # the worker is up and has read its budgets once
        try:
            conn.request("GET", paths[0])
            response = conn.getresponse()
            body = response.read()
            if response.status == 200:
                break
        except OSError:
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        if time.time() > deadline:
            raise SystemExit(f"the worker never answered the check (last answer {response and response.status}):\n" + open(worker_log).read()[-2000:])
        time.sleep(0.2)
    time.sleep(10)  # the corpus is counted and the budgets' statuses reflect it
    conn.close()  # the server closes idle connections: start on a fresh one
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    total = args.rate * args.seconds
    latencies, covering, refused = [], 0, 0
    start = time.perf_counter() + 0.1
    for i in range(total):
        scheduled = start + i / args.rate
        while (now := time.perf_counter()) < scheduled:
            if scheduled - now > 0.0005:
                time.sleep(scheduled - now - 0.0004)
        conn.request("GET", paths[i % len(paths)])
        response = conn.getresponse()
        body = response.read()
        latencies.append(time.perf_counter() - scheduled)
        if response.status != 200:
            raise SystemExit(f"HTTP {response.status}: {body[:200]!r}")
        answer = json.loads(body)
        covering += len(answer["budgets"])
        refused += not answer["allow"]
    elapsed = time.perf_counter() - start
    latencies.sort()
    ms = lambda s: f"{s * 1000:.3f} ms"  # noqa: E731
    print(f"{total} checks in {elapsed:.1f} s ({total / elapsed:.0f}/s), {args.budgets} budgets, "
          f"{covering / total:.1f} covering per call, {refused} refused")
    print(f"latency p50 {ms(percentile(latencies, 50))}, p99 {ms(percentile(latencies, 99))}, "
          f"p99.9 {ms(percentile(latencies, 99.9))}, max {ms(latencies[-1])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
