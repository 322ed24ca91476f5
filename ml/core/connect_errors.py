"""What to tell the user when the warehouse cannot be opened: the problem, then what to do about it.

The drivers say why a connection failed only in their message text (psycopg sets no SQLSTATE on a
failed connection attempt), so the known failures are recognised by their wording; anything else
keeps the driver's own words. Messages show the warehouse URL with its password hidden.
"""

from __future__ import annotations

import re
from pathlib import Path

from ml.core.settings import WarehouseTarget, redacted_url

VARIABLE = "TIDEMARK_WAREHOUSE_URL"
# Seconds that opening a PostgreSQL connection may take before it counts as unreachable.
POSTGRES_CONNECT_TIMEOUT_S = 10

_UNREACHABLE = ("connection refused", "could not connect", "timeout expired", "failed to resolve host",
                "could not translate host name", "no route to host", "network is unreachable", "connection timed out")
_REFUSED_LOGIN = ("password authentication failed", "no password supplied", "no pg_hba.conf entry",
                  "role \"", "peer authentication failed")


def _reason(exc: BaseException) -> str:
    """The driver's explanation on one line, without the wrappers and prefixes that repeat what we say."""
    text = " ".join(str(exc).split())
    text = text.rpartition(" failed: ")[2] if " failed: " in text else text
    text = text.partition(" Is the server running")[0]
    return re.sub(r"^(IO Error|FATAL|ERROR):\s*", "", text).strip()


def duckdb_problem(path: Path, exc: BaseException) -> str:
    """The message for a DuckDB file that cannot be opened (`exc` from duckdb.connect or from creating its folder)."""
    text = str(exc)
    if "not a valid DuckDB database file" in text:
        return f"{path} is not a DuckDB database; point {VARIABLE} at a DuckDB file or at a new path"
    if "Could not set lock" in text:
        holder = re.search(r"PID \d+", text)
        by = f" ({holder.group(0)})" if holder else ""
        return (f"the DuckDB warehouse {path} is in use by another process{by}; wait for it to finish or stop it, "
                "then retry (DuckDB lets one process write at a time)")
    if "read-only mode" in text and "does not exist" in text:
        return (f"the DuckDB warehouse {path} does not exist yet; load data first (`python -m ml simulate` or "
                f"`python -m ml load-csv`) or point {VARIABLE} at an existing warehouse")
    if isinstance(exc, OSError):  # from creating the file's folder; DuckDB raises its own errors
        return (f"cannot create the folder {path.parent} of the DuckDB warehouse ({exc.strerror or exc}); "
                f"point {VARIABLE} at a writable path")
    if "Is a directory" in text:
        return f"the DuckDB warehouse {path} is a directory; point {VARIABLE} at a DuckDB file or a new path"
    return f"cannot open the DuckDB warehouse {path}: {_reason(exc)}; check {VARIABLE}"


def postgres_problem(target: WarehouseTarget, exc: BaseException) -> str:
    """The message for a PostgreSQL connection that failed (`exc` from psycopg.connect)."""
    text, where = str(exc).lower(), f"{target.host}:{target.port}"
    if f'database "{target.database.lower()}" does not exist' in text:
        return (f"PostgreSQL at {where} has no database {target.database!r}; create it with "
                f"`createdb -h {target.host} -p {target.port} -U {target.user} {target.database}` "
                f"or set {VARIABLE} to an existing database")
    if any(words in text for words in _UNREACHABLE):
        return (f"cannot reach PostgreSQL at {where} ({_reason(exc)}); is PostgreSQL running at {where}? "
                f"Start it, or set {VARIABLE} to a server that is")
    if any(words in text for words in _REFUSED_LOGIN):
        return (f"PostgreSQL at {where} refused user {target.user!r} ({_reason(exc)}); fix the user or password "
                f"in {VARIABLE}")
    return f"cannot connect to PostgreSQL at {redacted_url(target.url)}: {_reason(exc)}; check {VARIABLE}"
