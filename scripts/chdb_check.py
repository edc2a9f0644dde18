#!/usr/bin/env python3
"""chdb_check.py — prove costline's ClickHouse DDL and analyst queries are valid on a
*current* ClickHouse, without a server.

Production runs a current ClickHouse, while the local/CI server is Debian's 18.16; chDB
(pip package chdb-core) embeds the current engine in-process, so this script applies the
migrations and runs every query against it.

Usage: chdb_check.py MIGRATIONS_DIR QUERIES_DIR

  * every MIGRATIONS_DIR/*.sql, in name order: statements end with a `;` at the end of a
    line, lines starting with `--` are comments, `{database}` is replaced by `costline`;
  * then, in database `costline`, every QUERIES_DIR/*.sql, in name order: one query per
    file (`--` comment lines allowed, no placeholders), executed against the (empty)
    tables, so names, types and functions are all checked.

Prints `ok <file>` or `FAIL <file>: <error>` per file and a closing line
`chdb: N passed, M failed`; exits 1 if anything failed, 2 on bad usage or missing chDB.
chDB is installed by `scripts/services.sh chdb` (into <state>/tools/chdb, found here
automatically; or set PYTHONPATH).
"""

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


def main(argv):
    if len(argv) != 3:
        print("usage: chdb_check.py MIGRATIONS_DIR QUERIES_DIR", file=sys.stderr)
        return 2
    migrations, queries = sql_files(argv[1]), sql_files(argv[2])
    chdb, session = import_chdb()

    passed = failed = 0
    with tempfile.TemporaryDirectory(prefix="costline-chdb-") as tmp:
        sess = session.Session(os.path.join(tmp, "db"))
        try:
            print(f"chdb_check: chDB {chdb.__version__}, engine "
                  f"{sess.query('SELECT version()', 'TSV').bytes().decode().strip()}", file=sys.stderr)

            for path in migrations:
                statement = None
                try:
                    text = path.read_text().replace("{database}", DATABASE)
                    for statement in split_statements(text):
                        sess.query(statement, "CSV")
                except Exception as exc:  # chdb raises its own ChdbError (a RuntimeError)
                    failed += 1
                    where = f" (in: {statement.splitlines()[0][:120]})" if statement else ""
                    print(f"FAIL {path}: {short_error(exc)}{where}")
                else:
                    passed += 1
                    print(f"ok {path}")

            sess.query(f"CREATE DATABASE IF NOT EXISTS {DATABASE}", "CSV")
            sess.query(f"USE {DATABASE}", "CSV")

            for path in queries:
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
