#!/usr/bin/env python3
"""End-to-end benchmark (not a test), on loopback services started by scripts/services.sh.

Throughput (repeated --runs times, each run on a fresh topic and fresh databases):
1. Preloads N generated records (default 1,000,000; 4 partitions) into a fresh topic, with
   `costline produce --record`, and reads that record log back to know what each consumer
   should end up with (valid attempts, re-sent duplicate copies, invalid records).
2. Baseline 1, same topic: a bare rdkafka consumer that only counts (`costline baseline-consume`).
3. costline: --workers N worker processes (release build) in one consumer group, from an
   empty database; throughput from the first flush until ClickHouse accounts for every record
   (also from process start); each worker's peak RSS (VmHWM) and share of the records.
4. Baseline 2: ClickHouse's ceiling for the same write set (`costline baseline-insert`): the
   ledger rows costline wrote in step 3, rebuilt from the records cut at the offsets of its
   flushes (checked: the same rollup totals), inserted into a fresh database with the same
   schema and insert streams as fast as the server takes them.
5. Baseline 3, same topic: ClickHouse's own Kafka table engine computing costline's minute
   rollup on a second ClickHouse 18.16 (scripts/kafka_engine_baseline.py, which says what it
   measures and what the Kafka engine can and cannot do). Then both rollups are reconciled
   against the record log.
   Ratios, per run (same topic): costline / raw consume; costline / ClickHouse ceiling;
   costline / Kafka engine, both from start (worker process start, CREATE TABLE: both include
   the consumer group join); and "steady": costline from its first flush / Kafka engine from
   its first insert.
Then, once: latency. A second topic gets steady traffic at --latency-rate records/s while
probe records are published one at a time by one long-lived `costline produce --pause-ms
1000..4000` (5 ms linger, as an application sends single events; its first record, which waits
for the producer's metadata, is not a probe); event-to-queryable latency is the time from a
probe's publication (the wall clock when it was handed to the producer, `sent_ms` in the record
log) until it is visible in usage_events (polled every 20 ms by its partition and offset, i.e.
by primary key, so that polling takes no CPU from the inserts being measured). Probes leave at
random moments (1–4 s apart, seeded), so that they do not fall into step with the worker's
flushes. The worker's flush and INSERT duration histograms are printed with the probes.

RSS mode (--rss-minutes M, instead of the above): one worker, a producer at a constant
--rss-rate (generated traffic: 300 tenants, 8 endpoints, fixed model mix, so a constant set of
rollup keys per minute; the virtual clock runs at real time), and the worker's RSS sampled
every --rss-interval seconds for M minutes; prints the samples and first/last/max. The dedup
index remembers each request for dedup_horizon + dedup_grace (3600 + 600 s by default), so
with the defaults RSS grows for 70 minutes before it can be flat; --rss-dedup-horizon-secs
(default 60, grace 60) makes the index reach its steady size in ~3 minutes (sweeps run once a
minute).

Cluster mode (--cluster): the same throughput runs with the workers writing to the loopback
ClickHouse cluster (2 shards x 2 replicas of 18.16 and ZooKeeper on one machine: a correctness
rig, not a capacity claim), without the ceiling and Kafka-engine baselines, which need one
server; compare with a run without --cluster made right before or after it.

Children run a copy of target/release/costline taken at start (a rebuild mid-run changes
nothing); worker logs go to <state>/bench/*.log.

Usage:
  scripts/bench_e2e.py [--records 1000000] [--runs 1] [--workers 1] [--latency-rate 20000]
                       [--probes 20] [--no-kafka-engine] [--kafka-block-size 0] [--no-build]
  scripts/bench_e2e.py --cluster [--records 300000] [--workers 2] --probes 0
  scripts/bench_e2e.py --rss-minutes 10 --rss-rate 5000 [--rss-interval 10]
                       [--rss-dedup-horizon-secs 60]
Prints per-run figures, medians and a JSON summary; BENCHMARKS.md records the results.
Every wait has a timeout; every child process is stopped at the end, also on errors and Ctrl-C.
"""
import argparse
import collections
import json
import os
import pathlib
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import clickhouse_http
import kafka_engine_baseline
from clickhouse_http import number
from kafka_engine_baseline import KAFKA_ENGINE, parsed_by_clickhouse_18

ROOT = pathlib.Path(__file__).resolve().parent.parent
BUILT = ROOT / "target/release/costline"
STATE = pathlib.Path(os.environ.get("COSTLINE_STATE_DIR", ROOT / ".state"))
# Every child runs a copy taken at start: a rebuild during the benchmark changes nothing.
BIN = str(STATE / "bench" / "costline-snapshot")
BROKERS = f"127.0.0.1:{os.environ.get('COSTLINE_KAFKA_PORT', '19092')}"
CLICKHOUSE = f"http://127.0.0.1:{os.environ.get('COSTLINE_CLICKHOUSE_HTTP_PORT', '18123')}"
# --cluster: the loopback cluster of scripts/clickhouse_cluster.sh, entered through its first server.
CLUSTER_NAME = "costline_cluster"
CLUSTER_SHARDS = [["http://127.0.0.1:28121", "http://127.0.0.1:28122"],
                  ["http://127.0.0.1:28123", "http://127.0.0.1:28124"]]
CLUSTER_ENV = {}
SERVICES = str(ROOT / "scripts/services.sh")

CHILDREN = []  # every process started here, stopped in stop_children()


class RunFailed(Exception):
    """One throughput run could not finish (the others still count)."""
CLEANUP = []  # callables run at the end (dropping databases, removing files)


# ---------------------------------------------------------------- processes


def spawn(cmd, **kwargs):
    process = subprocess.Popen(cmd, **kwargs)
    CHILDREN.append(process)
    return process


def stop(process, timeout=60):
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def stop_children():
    for process in reversed(CHILDREN):
        try:
            stop(process, timeout=30)
        except Exception as e:  # keep stopping the others
            print(f"could not stop pid {process.pid}: {e}", file=sys.stderr)


def log_file(name):
    """A file under <state>/bench for a child's stderr (kept for diagnosis, overwritten next time)."""
    path = STATE / "bench" / f"{name}.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    return open(path, "w")


def tail(path, lines=15):
    try:
        return "".join(open(path, errors="replace").readlines()[-lines:])
    except OSError:
        return ""


def run(cmd, timeout, env=None):
    """Runs a command to completion (killed on timeout or Ctrl-C); returns its stdout."""
    return subprocess.run(cmd, env=env, check=True, capture_output=True, text=True, timeout=timeout).stdout.strip()


def snapshot_binary():
    path = pathlib.Path(BIN)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    shutil.copy2(BUILT, temporary)
    temporary.replace(path)
    head = subprocess.run(["git", "log", "-1", "--format=%h %s"], cwd=ROOT, capture_output=True, text=True).stdout
    built = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(BUILT.stat().st_mtime))
    print(f"costline binary: {BUILT} built {built}; HEAD {head.strip()[:100]}", flush=True)


def on_sigterm(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


# ---------------------------------------------------------------- ClickHouse


def query(database, sql, url=None, check=False, timeout=30):
    return clickhouse_http.query(database, sql, url or CLICKHOUSE, check=check, timeout=timeout)


def use_cluster():
    """Points the workers and every query at the loopback cluster."""
    global CLICKHOUSE
    CLICKHOUSE = CLUSTER_SHARDS[0][0]
    CLUSTER_ENV.update(COSTLINE_CLICKHOUSE__CLUSTER=CLUSTER_NAME, COSTLINE_CLICKHOUSE__SHARDS=json.dumps(CLUSTER_SHARDS))


def drop_database(tag):
    if CLUSTER_ENV:
        for database in (tag, f"{tag}_local"):
            query("", f"DROP DATABASE IF EXISTS {database} ON CLUSTER {CLUSTER_NAME}")
    else:
        query("", f"DROP DATABASE IF EXISTS {tag}")


def rollup_totals(database, url, table):
    """Totals over every minute of a rollup table or view (TSV with names → dict)."""
    columns = ["attempts", "successes", "errors", "input_tokens", "cached_input_tokens", "cache_write_tokens",
               "output_tokens", "latency_ms_sum"]
    sql = "SELECT " + ", ".join(f"sum({c})" for c in columns) + f" FROM {table}"
    values = query(database, sql, url=url, check=True).split("\t")
    return dict(zip(columns, (number(v) for v in values)))


# ---------------------------------------------------------------- helpers


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env_for(tag, **extra):
    env = dict(os.environ, COSTLINE_KAFKA__TOPIC=tag, COSTLINE_KAFKA__GROUP_ID=tag, COSTLINE_KAFKA__BROKERS=BROKERS,
               COSTLINE_CLICKHOUSE__URL=CLICKHOUSE, COSTLINE_CLICKHOUSE__DATABASE=tag,
               COSTLINE_KAFKA__SESSION_TIMEOUT_MS="6000", COSTLINE_HTTP__LISTEN=f"127.0.0.1:{free_port()}",
               COSTLINE_LOG__LEVEL="warn,costline=info")
    env.update(CLUSTER_ENV)
    env.update(extra)
    return env


def accounted(database):
    return number(query(database, "SELECT sum(counted + duplicates + rejected) FROM flushes"))


def proc_status_kib(pid, field):
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def mib(kib):
    return kib / 1024


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt_rate(value):
    return "-" if value is None else f"{value:,.0f}"


def fmt_ratio(value):
    return "-" if value is None else f"{value:.3f}"


# ---------------------------------------------------------------- the record log

MEASURES = ("attempts", "successes", "errors", "input_tokens", "cached_input_tokens", "cache_write_tokens",
            "output_tokens", "latency_ms_sum")


def add_event(totals, event):
    totals["attempts"] += 1
    success = event.get("status") == "success"
    totals["successes"] += success
    totals["errors"] += not success
    totals["input_tokens"] += event.get("inputTokens", 0)
    totals["cached_input_tokens"] += event.get("cachedInputTokens", 0)
    totals["cache_write_tokens"] += event.get("cacheWriteTokens", 0)
    totals["output_tokens"] += event.get("outputTokens", 0)
    totals["latency_ms_sum"] += event.get("latencyMs", 0)


def read_record_log(path):
    """Totals by kind: valid (what costline should count), duplicate (re-sent copies),
    invalid_parsed (invalid records that ClickHouse 18.16 parses anyway)."""
    totals = {kind: collections.Counter() for kind in ("valid", "duplicate", "invalid_parsed")}
    counts = collections.Counter()
    with open(path, encoding="utf-8") as f:
        for line in f:
            record = json.loads(line)
            kind = record["kind"]
            counts[kind] += 1
            event = parsed_by_clickhouse_18(record["payload"])
            if kind == "invalid":
                if event is None:
                    continue
                kind = "invalid_parsed"
            elif event is None:
                raise SystemExit(f"a {kind} record that ClickHouse would not parse: {record['payload'][:200]}")
            add_event(totals[kind], event)
    counts["invalid_parsed"] = totals["invalid_parsed"]["attempts"]
    return counts, totals


# ---------------------------------------------------------------- costline


def costline_workers(args, tag, env_base):
    """Starts --workers workers, waits until every record is accounted for, stops them."""
    # The schema first (as a deployment does): the cluster's ON CLUSTER DDL takes seconds that
    # are no part of counting.
    run([BIN, "migrate"], timeout=300, env=env_base)
    started = time.time()
    logs = [log_file(f"worker-{i + 1}") for i in range(args.workers)]
    workers = [spawn([BIN, "run"], env=dict(env_base, COSTLINE_HTTP__LISTEN=f"127.0.0.1:{free_port()}"),
                     stdout=log, stderr=log) for log in logs]
    try:
        first_time, first_count = None, 0
        deadline = time.time() + args.timeout
        while True:
            count = accounted(tag)
            now = time.time()
            if count > 0 and first_time is None:
                first_time, first_count = now, count
            if count >= args.records:
                break
            dead = [(w.pid, w.returncode, log.name) for w, log in zip(workers, logs) if w.poll() is not None]
            if dead:
                raise RunFailed(f"worker(s) exited early: {count} of {args.records} accounted for; "
                                + "; ".join(f"pid {pid} exit code {code}"
                                            + (" (stopped by a SIGINT/SIGTERM from outside)" if code == 0 else "")
                                            + f", log {name}:\n{tail(name)}" for pid, code, name in dead))
            if now > deadline:
                raise RunFailed(f"the workers did not finish within {args.timeout} s: {count} of {args.records}")
            time.sleep(0.05)
        peaks = [mib(proc_status_kib(w.pid, "VmHWM")) for w in workers]
    finally:
        for w in workers:
            stop(w, timeout=120)
    shares = {}
    for line in query(tag, "SELECT worker, sum(counted + duplicates + rejected) FROM flushes GROUP BY worker").splitlines():
        name, n = line.split("\t")
        shares[name.rsplit("-", 1)[-1]] = int(n)
    per_worker = [{"pid": w.pid, "peak_rss_mib": round(p, 1), "records": shares.get(str(w.pid), 0)}
                  for w, p in zip(workers, peaks)]
    return {
        "rate": (args.records - first_count) / max(now - first_time, 1e-9),
        "rate_from_start": args.records / max(now - started, 1e-9),
        "seconds_from_start": now - started,
        "workers": per_worker,
    }


# ---------------------------------------------------------------- the Kafka engine

def reconcile(tag, ke_db, counts, totals):
    """Prints costline's and the Kafka engine's rollup totals next to the record log's."""
    costline = rollup_totals(tag, CLICKHOUSE, "usage_minute")
    costline_duplicates = number(query(tag, "SELECT sum(duplicates) FROM flushes"))
    costline_rejected = number(query(tag, "SELECT sum(rejected) FROM flushes"))
    ke = rollup_totals(ke_db, KAFKA_ENGINE, "usage_minute") if ke_db else None
    valid, dup, bad = totals["valid"], totals["duplicate"], totals["invalid_parsed"]
    print(f"  record log: {counts['valid']:,} valid, {counts['duplicate']:,} re-sent duplicate copies, "
          f"{counts['invalid']:,} invalid ({counts['invalid_parsed']:,} of which ClickHouse 18.16 parses)")
    print(f"  costline: {costline['attempts']:,} counted, {costline_duplicates:,} duplicates, {costline_rejected:,} rejected")
    header = f"  {'minute rollup, all minutes':<22}{'costline':>16}{'log: valid':>16}"
    if ke:
        header += f"{'Kafka engine':>16}{'KE-dup-invalid':>16}{'missing in KE':>15}"
    print(header)
    result = {"costline_equals_log": True, "kafka_engine_minus_dup_invalid_equals_costline": None}
    ke_missing = {}
    for m in MEASURES:
        line = f"  {m:<22}{costline[m]:>16,}{valid[m]:>16,}"
        result["costline_equals_log"] &= costline[m] == valid[m]
        if ke:
            explained = ke[m] - dup[m] - bad[m]
            ke_missing[m] = valid[m] - explained
            line += f"{ke[m]:>16,}{explained:>16,}{ke_missing[m]:>15,}"
        print(line)
    print("  costline vs the record log's valid attempts: " +
          ("equal in every column" if result["costline_equals_log"] else "DIFFERENT (see above)"))
    if ke:
        result["kafka_engine_minus_dup_invalid_equals_costline"] = all(v == 0 for v in ke_missing.values())
        result["kafka_engine_missing_attempts"] = ke_missing["attempts"]
        print("  Kafka engine: no dedup (re-sent copies counted twice) and no validation (invalid records it")
        print("  parses are counted). KE-dup-invalid = Kafka engine minus the log's duplicate copies and")
        print("  parseable invalid records; it equals costline's figure only if the Kafka engine lost nothing:")
        if result["kafka_engine_minus_dup_invalid_equals_costline"]:
            print("  equal in every column")
        else:
            print(f"  {ke_missing['attempts']:,} valid attempts missing ({ke_missing['input_tokens']:,} input tokens): "
                  "the message after each truncated record,\n  swallowed with it when the parser skips the broken"
                  " message (input_format_allow_errors_num)")
    return result


# ---------------------------------------------------------------- one throughput run


def throughput(args, tag, run_index):
    print(f"\n== run {run_index + 1} of {args.runs}: topic {tag}", flush=True)
    # Flush every 2 s, as the Kafka engine does (stream_flush_interval_ms), so that neither
    # starts writing sooner; the latency phase uses the worker's default.
    env = env_for(tag, COSTLINE_PIPELINE__FLUSH_INTERVAL_MS="2000")
    bench_dir = STATE / "bench"
    bench_dir.mkdir(parents=True, exist_ok=True)
    record_log = bench_dir / f"{tag}.records.jsonl"
    CLEANUP.append(lambda: record_log.unlink(missing_ok=True))
    if not args.keep:
        CLEANUP.append(lambda: drop_database(tag))
    out = run([BIN, "produce", "--count", str(args.records), "--seed", str(run_index + 1), "--partitions", "4",
               "--record", str(record_log)], timeout=1800, env=env)
    print(f"preload: {out}", flush=True)
    counts, totals = read_record_log(record_log)
    record_log.unlink(missing_ok=True)
    parseable = counts["valid"] + counts["duplicate"] + counts["invalid_parsed"]

    baseline = run([BIN, "baseline-consume", "--count", str(args.records), "--timeout-secs", str(args.timeout)],
                   timeout=args.timeout + 60, env=env)
    raw_rate = float(baseline.rsplit(":", 1)[1].split()[0])
    print(baseline, flush=True)

    result = {"topic": tag, "records": args.records, "raw_consume_records_per_s": raw_rate}
    c = costline_workers(args, tag, env)
    result.update(costline_records_per_s=c["rate"], costline_records_per_s_from_start=c["rate_from_start"],
                  workers=c["workers"])
    workers_text = "; ".join(f"pid {w['pid']}: {w['records']:,} records, peak RSS {w['peak_rss_mib']:.0f} MiB"
                             for w in c["workers"])
    print(f"costline ({args.workers} worker{'s' if args.workers > 1 else ''}): {c['rate']:,.0f} records/s from the "
          f"first flush, {c['rate_from_start']:,.0f} from process start ({c['seconds_from_start']:.1f} s); "
          f"{workers_text}", flush=True)

    # ClickHouse's ceiling for the same write set: the ledger rows this run wrote, rebuilt and
    # inserted into a fresh database as fast as the server takes them (one server only).
    if args.cluster:
        print("reconciliation:")
        result["check"] = reconcile(tag, None, counts, totals)
        result["ratio_costline_to_raw_consume"] = c["rate"] / raw_rate
        return result
    ceiling = run([BIN, "baseline-insert", "--count", str(args.records), "--flushes-from", tag,
                   "--timeout-secs", str(args.timeout)], timeout=args.timeout + 300, env=env)
    print(ceiling, flush=True)
    ceiling_rate = float(ceiling.rsplit(":", 1)[1].split()[0])
    result.update(clickhouse_ceiling_records_per_s=ceiling_rate,
                  ratio_costline_to_clickhouse_ceiling=c["rate"] / ceiling_rate)

    ke = None
    if not args.no_kafka_engine:
        ke = kafka_engine_baseline.measure(args, tag, parseable, CLEANUP)
        result.update(kafka_engine_records_per_s=ke["rate"], kafka_engine_records_per_s_from_first_rows=ke[
            "rate_from_first_rows"], kafka_engine_rows=ke["rows"], kafka_engine_parseable=parseable)
        first = "-" if ke["seconds_to_first_rows"] is None else f"{ke['seconds_to_first_rows']:.1f}"
        print(f"Kafka engine: rollup holds {ke['rows']:,} of {parseable:,} parseable records "
              f"{ke['seconds_from_create']:.1f} s after CREATE TABLE (first rows after {first} s): "
              f"{fmt_rate(ke['rate'])} records/s ({fmt_rate(ke['rate_from_first_rows'])} from the first rows), "
              f"counting {ke['messages']:,} messages consumed; {ke['stopped']}", flush=True)
    print("reconciliation:")
    result["check"] = reconcile(tag, ke["db"] if ke else None, counts, totals)
    result["ratio_costline_to_raw_consume"] = c["rate"] / raw_rate
    if ke and ke["rate"]:
        result["ratio_costline_to_kafka_engine"] = c["rate_from_start"] / ke["rate"]
    if ke and ke["rate_from_first_rows"]:
        result["ratio_costline_to_kafka_engine_steady"] = c["rate"] / ke["rate_from_first_rows"]
    return result


# ---------------------------------------------------------------- latency


def latency(args, tag):
    env = env_for(tag)
    if not args.keep:
        CLEANUP.append(lambda: query("", f"DROP DATABASE IF EXISTS {tag}"))
    run([BIN, "produce", "--count", "0", "--partitions", "4"], timeout=120, env=env)
    worker = spawn([BIN, "run"], env=env, stderr=log_file("latency-worker"))
    duration = args.probes * 5 + 30  # stopped once the probes are done
    load = spawn([BIN, "produce", "--count", str(int(args.latency_rate * duration)), "--rate", str(args.latency_rate),
                  "--seed", "2", "--no-create-topic", "--spacing-ms", str(1000 / args.latency_rate)],
                 env=env, stdout=subprocess.DEVNULL)
    latencies, acks, lost = [], [], 0
    probe_log = STATE / "bench" / "probe.jsonl"
    probe_log.unlink(missing_ok=True)
    prober = None
    try:
        time.sleep(10)  # join, and let the steady load settle
        # One long-lived producer sends the probes, one at a time, 1-4 s apart (seeded), as an
        # application sends its calls' events; each probe's line reaches the log once the broker has
        # it. 2.5 s apart on average, 30 probes take ~70 s of load, as long as probes sent one after
        # another did, so that ClickHouse's merges of the phase's parts fall inside it too. A few
        # more than needed: the generator's duplicate copies and invalid records are never counted
        # as new attempts, so they are not probes.
        probing_started = time.time()
        prober = spawn([BIN, "produce", "--count", str(args.probes + args.probes // 5 + 6), "--seed", "1000000",
                        "--no-create-topic", "--record", str(probe_log), "--pause-ms", "1000..4000",
                        "--start-ms", str(int(time.time() * 1000))], env=env, stdout=subprocess.DEVNULL)
        waiting, read_lines, deadline = {}, 0, time.time() + args.probes * 5 + 60
        while len(latencies) < args.probes and time.time() < deadline:
            finished = prober.poll() is not None  # before reading: every line it wrote is then in
            lines = probe_log.read_text().splitlines() if probe_log.exists() else []
            for number, line in enumerate(lines[read_lines:], start=read_lines):
                record = json.loads(line)
                # The first record waits for the producer's metadata and id: a start-up, not a probe.
                if number > 0 and record["kind"] == "valid":
                    waiting[(record["partition"], record["offset"])] = record
                    acks.append((record["acked_ms"] - record["sent_ms"]) / 1000)
            read_lines = len(lines)
            for (partition, offset), record in list(waiting.items()):
                # By primary key: a scan for the request id would read the whole table 50 times a
                # second and take the CPU that the inserts being measured need.
                seen_sql = (f"SELECT count() FROM usage_events WHERE kafka_topic = '{tag}' AND kafka_partition = "
                            f"{partition} AND kafka_offset = {offset} AND external_request_id = '{record['key']}'")
                if query(tag, seen_sql) == "1":
                    latencies.append(time.time() - record["sent_ms"] / 1000)
                    del waiting[(partition, offset)]
                elif time.time() - record["sent_ms"] / 1000 > 30:
                    lost += 1
                    del waiting[(partition, offset)]
            if finished and not waiting:
                break
            time.sleep(0.02)
        print(f"probing took {time.time() - probing_started:.0f} s under load")
        if lost:
            print(f"{lost} probes not seen within 30 s")
        metrics = worker_metrics(env["COSTLINE_HTTP__LISTEN"])
        flushes, inserts = histogram(metrics, "flush_duration_seconds"), histogram(metrics, "insert_duration_seconds")
    finally:
        if prober is not None:
            stop(prober)
        stop(load)
        stop(worker, timeout=120)
    if not latencies:
        return None, None, 0
    print("probe latencies, s: " + " ".join(f"{v:.2f}" for v in sorted(latencies)))
    if flushes:
        print("worker's flushes by duration (s, up to): " + ", ".join(f"{le}: {n}" for le, n in flushes))
        print("  of which the INSERTs (one per stream): " + ", ".join(f"{le}: {n}" for le, n in inserts))
        print(f"  mean flush {mean_of(metrics, 'flush_duration_seconds'):.3f} s, "
              f"mean INSERT {mean_of(metrics, 'insert_duration_seconds'):.3f} s")
    print(f"of which publishing (from handing the probe to the producer until the broker confirmed it): "
          f"p50 {statistics.median(acks) * 1000:.0f} ms, max {max(acks) * 1000:.0f} ms")
    return statistics.median(latencies), quantile_99(latencies), len(latencies)


def quantile_99(values):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * 0.99))]


# ---------------------------------------------------------------- RSS mode


def worker_metrics(listen):
    """The worker's /metrics text ("" while it does not answer)."""
    try:
        with urllib.request.urlopen(f"http://{listen}/metrics", timeout=5) as response:
            return response.read().decode()
    except OSError:
        return ""


def worker_gauges(listen):
    """The worker's dedup and batch gauges from /metrics (empty while it does not answer)."""
    wanted = ("dedup_entries", "dedup_memory_bytes", "pending_records", "window_keys")
    gauges = {}
    for line in worker_metrics(listen).splitlines():
        name, _, value = line.partition(" ")
        if name.startswith("costline_") and name[len("costline_"):] in wanted:
            gauges[name[len("costline_"):]] = int(float(value))
    return gauges


def mean_of(metrics, name):
    """Mean observation of the histogram `costline_<name>` in a /metrics text (0 without observations)."""
    sums = {}
    for line in metrics.splitlines():
        for part in ("sum", "count"):
            if line.startswith(f"costline_{name}_{part} "):
                sums[part] = float(line.rsplit(" ", 1)[1])
    return sums.get("sum", 0.0) / sums["count"] if sums.get("count") else 0.0


def histogram(metrics, name):
    """`(upper bound, observations)` per bucket of the histogram `costline_<name>` in a /metrics text (cumulative
    counts made per bucket; empty buckets left out)."""
    buckets, below = [], 0
    for line in metrics.splitlines():
        if line.startswith(f"costline_{name}_bucket{{"):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            count = int(float(line.rsplit(" ", 1)[1]))
            if count > below:
                buckets.append((le, count - below))
            below = count
    return buckets


def rss_mode(args, tag):
    env = env_for(tag, COSTLINE_PIPELINE__DEDUP_HORIZON_SECS=str(args.rss_dedup_horizon_secs),
                  COSTLINE_PIPELINE__DEDUP_GRACE_SECS=str(args.rss_dedup_grace_secs))
    if not args.keep:
        CLEANUP.append(lambda: query("", f"DROP DATABASE IF EXISTS {tag}"))
    run([BIN, "produce", "--count", "0", "--partitions", "4"], timeout=120, env=env)
    total = int(args.rss_rate * args.rss_minutes * 60)
    print(f"RSS mode: {total:,} records at {args.rss_rate:,} records/s for {args.rss_minutes} min, topic {tag}; "
          f"dedup horizon {args.rss_dedup_horizon_secs} s + grace {args.rss_dedup_grace_secs} s; "
          f"sampling every {args.rss_interval} s", flush=True)
    worker_log = log_file("rss-worker")
    worker = spawn([BIN, "run"], env=env, stdout=worker_log, stderr=worker_log)
    time.sleep(2)
    started = time.time()
    producer = spawn([BIN, "produce", "--count", str(total), "--rate", str(args.rss_rate), "--seed", "3",
                      "--no-create-topic", "--spacing-ms", str(1000 / args.rss_rate)],
                     env=env, stdout=subprocess.DEVNULL)
    samples = []
    end = started + args.rss_minutes * 60
    try:
        print(f"  {'t (s)':>7}{'RSS MiB':>10}{'accounted':>12}{'behind':>9}{'dedup entries':>15}{'dedup MiB':>11}"
              f"{'pending':>9}", flush=True)
        next_sample = started
        while True:
            now = time.time()
            if now >= next_sample:
                if worker.poll() is not None:
                    raise SystemExit(f"the worker exited (code {worker.returncode}), log {worker_log.name}:\n"
                                     + tail(worker_log.name))
                rss = mib(proc_status_kib(worker.pid, "VmRSS"))
                done = accounted(tag)
                expected_by_now = min(total, int((now - started) * args.rss_rate))
                gauges = worker_gauges(env["COSTLINE_HTTP__LISTEN"])
                samples.append({"t": round(now - started, 1), "rss_mib": round(rss, 1), "accounted": done, **gauges})
                print(f"  {now - started:>7.0f}{rss:>10.1f}{done:>12,}{max(0, expected_by_now - done):>9,}"
                      f"{gauges.get('dedup_entries', -1):>15,}{mib(gauges.get('dedup_memory_bytes', 0) / 1024):>11.1f}"
                      f"{gauges.get('pending_records', -1):>9,}", flush=True)
                next_sample += args.rss_interval
            if now >= end + 60 or (now >= end and producer.poll() is not None and accounted(tag) >= total):
                break
            time.sleep(0.5)
        peak = mib(proc_status_kib(worker.pid, "VmHWM"))
    finally:
        stop(producer)
        stop(worker, timeout=120)
    values = [s["rss_mib"] for s in samples]
    # The dedup index sweeps entries older than horizon + grace at most once a minute.
    warmup = min(args.rss_dedup_horizon_secs + args.rss_dedup_grace_secs + 60, args.rss_minutes * 30)
    after_warmup = [s["rss_mib"] for s in samples if s["t"] >= warmup]
    summary = {
        "rss_rate": args.rss_rate, "rss_minutes": args.rss_minutes,
        "dedup_horizon_secs": args.rss_dedup_horizon_secs, "dedup_grace_secs": args.rss_dedup_grace_secs,
        "records": total, "accounted": accounted(tag),
        "rss_first_mib": values[0] if values else None, "rss_last_mib": values[-1] if values else None,
        "rss_max_mib": max(values) if values else None, "peak_rss_mib": round(peak, 1),
        "warmup_secs": warmup,
        "rss_after_warmup_first_mib": after_warmup[0] if after_warmup else None,
        "rss_after_warmup_last_mib": after_warmup[-1] if after_warmup else None,
        "rss_after_warmup_min_mib": min(after_warmup) if after_warmup else None,
        "rss_after_warmup_max_mib": max(after_warmup) if after_warmup else None,
        "samples": samples,
    }
    print(f"RSS, all samples: first {summary['rss_first_mib']} MiB (idle worker), last {summary['rss_last_mib']} MiB, "
          f"max {summary['rss_max_mib']} MiB; peak (VmHWM) {summary['peak_rss_mib']} MiB")
    print(f"RSS from t = {warmup:.0f} s (after the dedup index's warm-up): first "
          f"{summary['rss_after_warmup_first_mib']} MiB, last {summary['rss_after_warmup_last_mib']} MiB, "
          f"min {summary['rss_after_warmup_min_mib']} MiB, max {summary['rss_after_warmup_max_mib']} MiB")
    print(f"{summary['accounted']:,} of {total:,} records accounted for ('behind': records the producer should "
          f"have sent by then that ClickHouse does not account for yet; ~ rate x flush interval)")
    return summary


# ---------------------------------------------------------------- main


def print_runs(args, results):
    print(f"\n== {len(results)} run(s) of {args.records:,} records, {args.workers} worker(s)")
    cols = [("costline", "costline_records_per_s", fmt_rate),
            ("(from start)", "costline_records_per_s_from_start", fmt_rate),
            ("raw consume", "raw_consume_records_per_s", fmt_rate),
            ("CH ceiling", "clickhouse_ceiling_records_per_s", fmt_rate),
            ("Kafka engine", "kafka_engine_records_per_s", fmt_rate),
            ("(first rows)", "kafka_engine_records_per_s_from_first_rows", fmt_rate),
            ("cl/raw", "ratio_costline_to_raw_consume", fmt_ratio),
            ("cl/ceiling", "ratio_costline_to_clickhouse_ceiling", fmt_ratio),
            ("cl/KE", "ratio_costline_to_kafka_engine", fmt_ratio),
            ("cl/KE steady", "ratio_costline_to_kafka_engine_steady", fmt_ratio),
            ("peak RSS MiB", "peak_rss_mib", lambda v: "-" if v is None else f"{v:.0f}")]
    for r in results:
        r["peak_rss_mib"] = max(w["peak_rss_mib"] for w in r["workers"])
    print("  " + f"{'run':<7}" + "".join(f"{name:>13}" for name, _, _ in cols))
    for i, r in enumerate(results):
        print("  " + f"{i + 1:<7}" + "".join(f"{f(r.get(key)):>13}" for _, key, f in cols))
    medians = {key: median([r.get(key) for r in results]) for _, key, _ in cols}
    print("  " + f"{'median':<7}" + "".join(f"{f(medians[key]):>13}" for _, key, f in cols))
    print("""  records/s. costline: from its first flush until ClickHouse accounts for every record; (from start):
  from starting the worker process(es). Kafka engine: from CREATE TABLE until its rollup stopped growing
  (includes the group join, like costline's from-start figure); (first rows): from its first insert.
  CH ceiling: the same ledger rows, rebuilt from the run's flushes, inserted into a fresh database as fast
  as ClickHouse takes them (`costline baseline-insert`). cl/raw = costline / raw consume; cl/ceiling =
  costline / CH ceiling; cl/KE = costline from start / Kafka engine from CREATE TABLE (both
  include start-up and the group join); cl/KE steady = costline from its first flush / Kafka engine from
  its first rows. Ratios are per run (same topic); the median row's ratios are medians of per-run ratios.
  peak RSS: the largest worker's VmHWM.""")
    return medians


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=1, help="throughput runs, each on a fresh topic (medians printed)")
    parser.add_argument("--workers", type=int, default=1, help="costline worker processes in one consumer group")
    parser.add_argument("--latency-rate", type=int, default=20_000,
                        help="records/s of steady traffic during the latency phase (skip the phase with --probes 0)")
    parser.add_argument("--probes", type=int, default=20, help="latency probes; 0 skips the latency phase")
    parser.add_argument("--no-kafka-engine", action="store_true", help="skip the ClickHouse Kafka engine baseline")
    parser.add_argument("--kafka-block-size", type=int, default=0,
                        help="kafka_max_block_size of the Kafka table (0: the server's default)")
    parser.add_argument("--kafka-consumers", type=int, default=1, help="kafka_num_consumers of the Kafka table")
    parser.add_argument("--kafka-stall-secs", type=float, default=15,
                        help="the Kafka engine is done when its rollup has not grown for this long")
    parser.add_argument("--timeout", type=int, default=900, help="longest wait for one consumer, seconds")
    parser.add_argument("--rss-minutes", type=float, default=0, help="RSS mode: run this long instead of the rest")
    parser.add_argument("--rss-rate", type=int, default=5_000, help="RSS mode: records/s")
    parser.add_argument("--rss-interval", type=float, default=10, help="RSS mode: seconds between samples")
    parser.add_argument("--rss-dedup-horizon-secs", type=int, default=60)
    parser.add_argument("--rss-dedup-grace-secs", type=int, default=60)
    parser.add_argument("--keep", action="store_true", help="keep the benchmark's databases")
    parser.add_argument("--cluster", action="store_true",
                        help="write to the loopback ClickHouse cluster (no ceiling or Kafka-engine baseline)")
    parser.add_argument("--no-build", action="store_true", help="use target/release/costline as it is")
    args = parser.parse_args()
    if args.workers < 1 or args.runs < 1 or args.records < 1:
        parser.error("--workers, --runs and --records must be at least 1")
    if args.latency_rate < 1 or args.rss_rate < 1:
        parser.error("--latency-rate and --rss-rate must be at least 1 (--probes 0 skips the latency phase)")

    signal.signal(signal.SIGTERM, on_sigterm)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # also when started in the background
    try:
        run([SERVICES, "up"], timeout=300)
        if args.cluster:
            run([SERVICES, "up", "cluster"], timeout=300)
            use_cluster()
            args.no_kafka_engine = True
        if not args.no_kafka_engine and not args.rss_minutes:
            kafka_engine_baseline.start_server()
        if not args.no_build:
            subprocess.run(["cargo", "build", "--release", "--quiet", "-p", "costline"], cwd=ROOT, check=True,
                           timeout=1800)
        snapshot_binary()
        stamp = int(time.time())
        if args.rss_minutes:
            summary = rss_mode(args, f"bench_rss_{stamp}")
            print(json.dumps(summary, indent=2))
            return
        results, failures = [], []
        for i in range(args.runs):
            try:
                results.append(throughput(args, f"bench_e2e_{stamp}_{i + 1}", i))
            except (RunFailed, RuntimeError, subprocess.SubprocessError, OSError) as e:
                detail = getattr(e, "stderr", None) or ""
                failures.append(f"run {i + 1}: {e} {detail}".strip())
                print(f"run {i + 1} FAILED: {e}\n{detail}".rstrip(), flush=True)
                stop_children()  # whatever that run left running
        if not results:
            raise SystemExit("every run failed:\n" + "\n".join(failures))
        medians = print_runs(args, results)
        if failures:
            print(f"  ({len(failures)} of {args.runs} runs failed and are left out: see above)")
        p50 = p99 = None
        probes = 0
        if args.probes > 0:
            p50, p99, probes = latency(args, f"bench_latency_{stamp}")
            if probes:
                print(f"\nlatency at {args.latency_rate:,} records/s: p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms "
                      f"({probes} of {args.probes} probes seen)")
        print(json.dumps({
            "records": args.records,
            "runs": args.runs,
            "failed_runs": failures,
            "workers": args.workers,
            "cluster": args.cluster,
            "median_costline_records_per_s": round(medians["costline_records_per_s"]),
            "median_raw_consume_records_per_s": round(medians["raw_consume_records_per_s"]),
            "median_kafka_engine_records_per_s": None if medians["kafka_engine_records_per_s"] is None
            else round(medians["kafka_engine_records_per_s"]),
            "median_ratio_costline_to_raw_consume": round(medians["ratio_costline_to_raw_consume"], 3),
            "median_clickhouse_ceiling_records_per_s": None if medians["clickhouse_ceiling_records_per_s"] is None
            else round(medians["clickhouse_ceiling_records_per_s"]),
            "median_ratio_costline_to_clickhouse_ceiling": None
            if medians["ratio_costline_to_clickhouse_ceiling"] is None
            else round(medians["ratio_costline_to_clickhouse_ceiling"], 3),
            "median_ratio_costline_to_kafka_engine": None if medians["ratio_costline_to_kafka_engine"] is None
            else round(medians["ratio_costline_to_kafka_engine"], 3),
            "median_ratio_costline_to_kafka_engine_steady": None
            if medians["ratio_costline_to_kafka_engine_steady"] is None
            else round(medians["ratio_costline_to_kafka_engine_steady"], 3),
            "median_worker_peak_rss_mib": round(medians["peak_rss_mib"], 1),
            "latency_rate_records_per_s": args.latency_rate,
            "event_to_queryable_p50_ms": None if p50 is None else round(p50 * 1000),
            "event_to_queryable_p99_ms": None if p99 is None else round(p99 * 1000),
            "latency_probes_seen": probes,
            "runs_detail": results,
        }, indent=2, default=str))
    except KeyboardInterrupt:
        print("\ninterrupted: stopping child processes", file=sys.stderr)
        sys.exit(130)
    finally:
        stop_children()
        for cleanup in reversed(CLEANUP):
            try:
                cleanup()
            except Exception as e:
                print(f"cleanup failed: {e}", file=sys.stderr)


if __name__ == "__main__":
    main()
