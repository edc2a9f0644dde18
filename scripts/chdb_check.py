#!/usr/bin/env python3
"""chdb_check.py — prove costline's ClickHouse DDL and analyst queries are valid on a
*current* ClickHouse, without a server.

Production runs a current ClickHouse, while the local/CI server is Debian's 18.16; chDB
(pip package chdb-core) embeds the current engine in-process, so this script applies the
migrations and runs every query against it.

Usage: chdb_check.py [--smoke] MIGRATIONS_DIR QUERIES_DIR
       chdb_check.py [--smoke] --migrations-sql FILE QUERIES_DIR

  * the migrations: every MIGRATIONS_DIR/*.sql in name order, or the single FILE of
    statements (the output of `costline migrate --print-sql`, placeholders expanded):
    statements end with a `;` at the end of a line, lines starting with `--` are comments,
    `{database}` is replaced by `costline`; one check per file;
  * with --smoke: one row inserted into `costline.flush_ledger` (2 counted events, 1 minute
    rollup row, 1 reject), then a check that the views fanned it out to usage_events,
    rejected_events, flushes and usage_minute/usage_hour/usage_day with the right values;
    one check;
  * then, in database `costline`, every QUERIES_DIR/*.sql, in name order: one query per
    file (`--` comment lines allowed, no placeholders), executed against the tables (empty,
    or holding the smoke row), so names, types and functions are all checked.

Prints `ok <what>` or `FAIL <what>: <error>` per check and a closing line
`chdb: N passed, M failed`; exits 1 if anything failed, 2 on bad usage or missing chDB.
chDB is installed by `scripts/services.sh chdb` (into <state>/tools/chdb, found here
automatically; or set PYTHONPATH).
"""

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

DATABASE = "costline"


def import_chdb():
    """Import chdb, looking in the state dir that services.sh installs it into."""
    try:
        import chdb  # noqa: F401
    except ImportError:
        repo = Path(__file__).resolve().parent.parent
        state = Path(os.environ.get("COSTLINE_STATE_DIR", repo / ".state"))
        sys.path.insert(0, str(state / "tools" / "chdb"))
        try:
            import chdb  # noqa: F401
        except ImportError:
            print("chdb_check: chDB is not installed; run `scripts/services.sh chdb` first", file=sys.stderr)
            sys.exit(2)
    import chdb
    from chdb import session

    return chdb, session


def strip_comments(text):
    """Drop whole-line `--` comments (and blank lines)."""
    return "\n".join(
        line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("--")
    )


def split_statements(text):
    """Statements end with a `;` at the end of a line."""
    statements, current = [], []
    for line in strip_comments(text).splitlines():
        if line.rstrip().endswith(";"):
            current.append(line.rstrip()[:-1])
            statements.append("\n".join(current))
            current = []
        else:
            current.append(line)
    statements.append("\n".join(current))  # a last statement without `;`
    return [s.strip() for s in statements if s.strip()]


def short_error(exc):
    """First meaningful line of a chDB error (they can carry long stack traces)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    msg = lines[0] if lines else type(exc).__name__
    return msg if len(msg) <= 800 else msg[:800] + "..."


def sql_files(directory):
    d = Path(directory)
    if not d.is_dir():
        print(f"chdb_check: not a directory: {directory}", file=sys.stderr)
        sys.exit(2)
    return sorted(p for p in d.iterdir() if p.is_file() and p.suffix == ".sql")


# The smoke flush: offsets 10..13 of one partition; 10 and 11 are the two attempts of one
# request (a rate-limited one, then a success in 100 ms), 12 is invalid, 13 a duplicate.
# The minute rollup row is what the worker would compute from the two events; latency
# bucket 118 of the 4 % log histogram is reported as 1.04^117.5 ≈ 100.3 ms.
SMOKE_TIME = "2025-01-15 10:07:30"
SMOKE_ROW = {
    "kafka_topic": "smoke.usage", "kafka_partition": 3, "first_offset": 10, "next_offset": 14,
    "newest_record_time": SMOKE_TIME, "duplicate_count": 1, "worker": "smoke",
    "flushed_at": "2025-01-15 10:08:00", "targets": 63,

    "ev_offset": [10, 11],
    "ev_record_time": [SMOKE_TIME, SMOKE_TIME],
    "ev_event_time": ["2025-01-15 10:07:28", "2025-01-15 10:07:29"],
    "ev_external_request_id": ["req-1", "req-1"],
    "ev_attempt": [1, 2],
    "ev_first_of_request": [1, 0],
    "ev_tenant": ["acme", "acme"],
    "ev_endpoint_tag": ["checkout.ai_summary", "checkout.ai_summary"],
    "ev_prompt_version": ["v3", "v3"],
    "ev_provider": ["openai", "openai"],
    "ev_model": ["gpt-4o-mini", "gpt-4o-mini"],
    "ev_environment": ["prod", "prod"],
    "ev_data_mode": ["real", "real"],
    "ev_status": ["rate_limited", "success"],
    "ev_error_code": ["429", ""],
    "ev_input_tokens": [1000, 1000],
    "ev_cached_input_tokens": [0, 200],
    "ev_cache_write_tokens": [0, 0],
    "ev_cache_write_1h_tokens": [0, 150],
    "ev_output_tokens": [0, 300],
    "ev_latency_ms": [None, 100],
    "ev_cost_usd": [0.0025, 0.01],  # Decimal: unquoted numbers
    "ev_price_version": ["2025-01-01", "2025-01-01"],

    "ru_window_start": ["2025-01-15 10:07:00"],
    "ru_tenant": ["acme"],
    "ru_endpoint_tag": ["checkout.ai_summary"],
    "ru_prompt_version": ["v3"],
    "ru_provider": ["openai"],
    "ru_model": ["gpt-4o-mini"],
    "ru_environment": ["prod"],
    "ru_data_mode": ["real"],
    "ru_requests": [1], "ru_attempts": [2], "ru_duplicates": [1],
    "ru_successes": [1], "ru_errors": [1],
    "ru_input_tokens": [2000], "ru_cached_input_tokens": [200],
    "ru_cache_write_tokens": [0], "ru_cache_write_1h_tokens": [150], "ru_output_tokens": [300],
    "ru_cost_usd": [0.0125],
    "ru_unpriced_attempts": [0],
    "ru_latency_ms_sum": [100], "ru_latency_ms_max": [100],
    "ru_latency_buckets": [[118]], "ru_latency_counts": [[1]], "ru_flush_offset": [0],

    "rj_offset": [12],
    "rj_record_time": [SMOKE_TIME],
    "rj_reason_code": ["invalid_json"],
    "rj_field": [""],
    "rj_reason": ["expected value at line 1 column 1"],
    "rj_payload_head": ["{oops"],
    "rj_payload_bytes": [5],
}

# (table, what is selected, expected values); floats compare within 0.05.
SMOKE_CHECKS = [
    ("usage_events", "count(), toFloat64(sum(cost_usd)), min(kafka_offset), max(kafka_offset), countIf(latency_ms IS NULL), "
     "sum(cache_write_1h_tokens)",
     [2, 0.0125, 10, 11, 1, 150]),
    ("rejected_events", "count(), any(kafka_offset), any(reason_code)", [1, 12, "invalid_json"]),
    ("flushes", "count(), sum(counted), sum(duplicates), sum(rejected), max(next_offset)", [1, 2, 1, 1, 14]),
] + [
    (f"usage_{rollup}",
     "count(), toString(any(window_start)), sum(requests), sum(attempts), sum(retries), "
     "toFloat64(sum(cost_usd)), any(latency_ms_p50), sum(cache_write_1h_tokens)",
     [1, window, 1, 2, 1, 0.0125, 100.3, 150])
    for rollup, window in [("minute", "2025-01-15 10:07:00"), ("hour", "2025-01-15 10:00:00"),
                           ("day", "2025-01-15 00:00:00")]
]


# A reprice chunk over the smoke flush: attempt 11 costs 0.0075 more; the rollup delta, plus
# the chunk's marker row (endpoint_tag '', which the analyst views leave out).
REPRICE_ROW = {
    "reprice_id": "smoke-reprice", "chunk": "smoke-chunk", "targets": 92, "repriced_at_ms": 1736935680000,
    "cc_kafka_topic": ["smoke.usage"], "cc_kafka_partition": [3], "cc_kafka_offset": [11],
    "cc_event_time": ["2025-01-15 10:07:29"], "cc_tenant": ["acme"], "cc_endpoint_tag": ["checkout.ai_summary"],
    "cc_prompt_version": ["v3"], "cc_provider": ["openai"], "cc_model": ["gpt-4o-mini"],
    "cc_environment": ["prod"], "cc_data_mode": ["real"], "cc_cost_delta": [0.0075], "cc_unpriced_delta": [0],
    "cc_price_version": ["fix:openai/gpt-4o-mini@2025-01-01"],
    "ru_window_start": ["2025-01-15 10:07:00", "2025-01-15 10:07:00"], "ru_tenant": ["acme", "smoke-chunk"],
    "ru_endpoint_tag": ["checkout.ai_summary", ""], "ru_prompt_version": ["v3", "#reprice"],
    "ru_provider": ["openai", ""], "ru_model": ["gpt-4o-mini", ""], "ru_environment": ["prod", ""],
    "ru_data_mode": ["real", ""], "ru_cost_usd": [0.0075, 0], "ru_unpriced_attempts": [0, 0],
}
REPRICE_CHECKS = [
    ("cost_corrections", "count(), toFloat64(sum(cost_delta)), any(kafka_offset)", [1, 0.0075, 11]),
] + [
    (f"usage_{rollup}", "count(), sum(attempts), toFloat64(sum(cost_usd))", [1, 2, 0.02])
    for rollup in ("minute", "hour", "day")
]


def matches(got, want):
    if isinstance(want, float):
        return abs(float(got) - want) < 0.05
    return got == str(want)


def smoke(sess):
    """Inserts SMOKE_ROW into the ledger, then REPRICE_ROW into the reprice ledger; returns the
    list of fan-out mismatches."""
    problems = []
    for ledger, row, checks in [("flush_ledger", SMOKE_ROW, SMOKE_CHECKS),
                                ("reprice_ledger", REPRICE_ROW, REPRICE_CHECKS)]:
        sess.query(f"INSERT INTO {DATABASE}.{ledger} FORMAT JSONEachRow {json.dumps(row)}", "CSV")
        for table, columns, want in checks:
            got = sess.query(f"SELECT {columns} FROM {DATABASE}.{table}", "TSV").bytes().decode()
            got = got.rstrip("\n").split("\t")
            if len(got) != len(want) or not all(matches(g, w) for g, w in zip(got, want)):
                problems.append(f"{ledger} -> {table}: got {got}, want {want} ({columns})")
    return problems


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="chdb_check.py",
        usage="%(prog)s [--smoke] {MIGRATIONS_DIR | --migrations-sql FILE} QUERIES_DIR",
        description="Apply costline's migrations in chDB and run the analyst queries.")
    parser.add_argument("--migrations-sql", metavar="FILE",
                        help="one file of statements (`costline migrate --print-sql`), "
                             "instead of MIGRATIONS_DIR")
    parser.add_argument("--smoke", action="store_true",
                        help="insert one flush_ledger row and check the fan-out")
    parser.add_argument("dirs", nargs="+", metavar="DIR", help="[MIGRATIONS_DIR] QUERIES_DIR")
    args = parser.parse_args(argv[1:])
    if len(args.dirs) != (1 if args.migrations_sql else 2):
        parser.error("expected MIGRATIONS_DIR QUERIES_DIR, or --migrations-sql FILE QUERIES_DIR")
    if args.migrations_sql:
        if not Path(args.migrations_sql).is_file():
            parser.error(f"not a file: {args.migrations_sql}")
        args.migrations = [Path(args.migrations_sql)]
    else:
        args.migrations = sql_files(args.dirs[0])
    args.queries = sql_files(args.dirs[-1])
    return args


def main(argv):
    args = parse_args(argv)
    chdb, session = import_chdb()

    passed = failed = 0
    with tempfile.TemporaryDirectory(prefix="costline-chdb-") as tmp:
        sess = session.Session(os.path.join(tmp, "db"))
        try:
            print(f"chdb_check: chDB {chdb.__version__}, engine "
                  f"{sess.query('SELECT version()', 'TSV').bytes().decode().strip()}", file=sys.stderr)

            for path in args.migrations:
                statement = None
                try:
                    text = path.read_text().replace("{database}", DATABASE)
                    statements = split_statements(text)
                    for statement in statements:
                        sess.query(statement, "CSV")
                except Exception as exc:  # chdb raises its own ChdbError (a RuntimeError)
                    failed += 1
                    where = f" (in: {statement.splitlines()[0][:120]})" if statement else ""
                    print(f"FAIL {path}: {short_error(exc)}{where}")
                else:
                    passed += 1
                    print(f"ok {path} ({len(statements)} statements)")

            sess.query(f"CREATE DATABASE IF NOT EXISTS {DATABASE}", "CSV")
            sess.query(f"USE {DATABASE}", "CSV")

            if args.smoke:
                try:
                    problems = smoke(sess)
                except Exception as exc:
                    problems = [short_error(exc)]
                if problems:
                    failed += 1
                    print(f"FAIL smoke: {'; '.join(problems)}")
                else:
                    passed += 1
                    print("ok smoke: 1 flush_ledger row -> usage_events 2 rows, rejected_events 1, "
                          "flushes 1, usage_minute/usage_hour/usage_day 1 row each "
                          "(requests 1, attempts 2, cost 0.0125, p50 100.3 ms); 1 reprice_ledger row -> "
                          "cost_corrections 1 row, every rollup's cost 0.02")

            for path in args.queries:
                try:
                    query = strip_comments(path.read_text()).strip().rstrip(";").strip()
                    if not query:
                        raise ValueError("no query in file")
                    sess.query(query, "CSV")
                except Exception as exc:
                    failed += 1
                    print(f"FAIL {path}: {short_error(exc)}")
                else:
                    passed += 1
                    print(f"ok {path}")
        finally:
            sess.close()

    print(f"chdb: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
