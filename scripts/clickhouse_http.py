"""ClickHouse over HTTP for the benchmark scripts: one statement per request."""
import urllib.error
import urllib.parse
import urllib.request


def query(database, sql, url, check=False, timeout=30):
    """Runs one statement; on failure returns "" (for polling) or raises (check=True)."""
    params = urllib.parse.urlencode({"database": database}) if database else ""
    request = urllib.request.Request(f"{url}/?{params}", data=sql.encode())
    try:
        return urllib.request.urlopen(request, timeout=timeout).read().decode().strip()
    except urllib.error.HTTPError as e:
        if check:
            raise RuntimeError(f"ClickHouse at {url} refused: {sql[:200]}\n{e.read().decode()[:1000]}") from None
        return ""
    except Exception:
        if check:
            raise
        return ""


def number(text):
    """An integer answer, 0 when there is none."""
    try:
        return int(text)
    except ValueError:
        return 0
