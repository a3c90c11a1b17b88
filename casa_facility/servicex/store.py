"""Request, file and dataset state of the endpoint, in SQLite (a restart loses nothing).

One connection shared by the web threads and the pool callbacks, serialised by a lock; WAL mode
so readers never wait on the single writer for long.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

__all__ = ["Store", "now"]

DONE = ("Complete", "Fatal", "Canceled", "Bad Dataset")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    request_id TEXT PRIMARY KEY, title TEXT, did TEXT, did_id INTEGER, selection TEXT,
    codegen TEXT, code TEXT, tree TEXT, result_format TEXT, status TEXT, submit_time TEXT,
    finish_time TEXT, output TEXT, error TEXT, owner TEXT);
CREATE TABLE IF NOT EXISTS files (
    request_id TEXT, file_id INTEGER, lfn TEXT, candidates TEXT, object TEXT, status TEXT,
    size INTEGER, events INTEGER, seconds REAL, created_at TEXT, error TEXT,
    PRIMARY KEY (request_id, file_id));
CREATE TABLE IF NOT EXISTS datasets (
    id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT UNIQUE, did_finder TEXT, n_files INTEGER,
    size INTEGER, events INTEGER, last_used TEXT, last_updated TEXT, lookup_status TEXT,
    is_stale INTEGER DEFAULT 0, files TEXT);
"""


def now() -> str:
    """UTC now as naive ISO 8601 (the servicex client reads these as UTC)."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None).isoformat(timespec="microseconds")


class Store:
    """SQLite state: ``requests`` (one row per transform), ``files`` (one per input), ``datasets``."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(_SCHEMA)

    def _q(self, sql: str, args: tuple = ()) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(r) for r in self._db.execute(sql, args).fetchall()]

    # -- datasets --------------------------------------------------------------------------------
    def dataset(self, name: str, finder: str, files: list[str], status: str = "complete",
                events: int = 0, size: int = 0) -> int:
        """Record a looked-up dataset (insert or refresh); returns its id."""
        t = now()
        with self._lock:
            self._db.execute(
                "INSERT INTO datasets (name, did_finder, n_files, size, events, last_used, last_updated,"
                " lookup_status, files) VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT(name) DO UPDATE SET"
                " n_files=excluded.n_files, size=excluded.size, events=excluded.events, last_used=excluded.last_used,"
                " last_updated=excluded.last_updated, lookup_status=excluded.lookup_status, files=excluded.files,"
                " is_stale=0", (name, finder, len(files), size, events, t, t, status, json.dumps(files)))
            return self._db.execute("SELECT id FROM datasets WHERE name=?", (name,)).fetchone()[0]

    def datasets(self, finder: str | None = None, show_deleted: bool = False) -> list[dict[str, Any]]:
        rows = self._q("SELECT * FROM datasets ORDER BY id")
        return [r for r in rows if (finder is None or r["did_finder"] == finder) and (show_deleted or not r["is_stale"])]

    def get_dataset(self, ds_id: int) -> dict[str, Any] | None:
        rows = self._q("SELECT * FROM datasets WHERE id=?", (ds_id,))
        return rows[0] if rows else None

    def mark_dataset_stale(self, ds_id: int) -> bool:
        with self._lock:
            return self._db.execute("UPDATE datasets SET is_stale=1 WHERE id=?", (ds_id,)).rowcount > 0

    # -- requests --------------------------------------------------------------------------------
    def add_request(self, req: dict[str, Any], files: list[tuple[str, list, str]]) -> None:
        """Insert a request and its files ``(lfn, candidates, object name)`` in one transaction."""
        with self._lock:
            self._db.execute("BEGIN")
            self._db.execute(
                "INSERT INTO requests (request_id, title, did, did_id, selection, codegen, code, tree,"
                " result_format, status, submit_time, output, owner) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (req["request_id"], req["title"], req["did"], req["did_id"], req["selection"], req["codegen"],
                 req["code"], req["tree"], req["result_format"], "Running", now(), json.dumps(req["output"]),
                 req.get("owner")))
            self._db.executemany(
                "INSERT INTO files (request_id, file_id, lfn, candidates, object, status) VALUES (?,?,?,?,?,?)",
                [(req["request_id"], i, lfn, json.dumps(c), obj, "pending") for i, (lfn, c, obj) in enumerate(files)])
            self._db.execute("COMMIT")

    def request(self, request_id: str) -> dict[str, Any] | None:
        rows = self._q("SELECT * FROM requests WHERE request_id=?", (request_id,))
        if not rows:
            return None
        r = rows[0]
        r["output"] = json.loads(r["output"])
        counts = {row["status"]: row["n"] for row in self._q(
            "SELECT status, COUNT(*) AS n FROM files WHERE request_id=? GROUP BY status", (request_id,))}
        r["files"] = sum(counts.values())
        r["files_completed"] = counts.get("success", 0)
        r["files_failed"] = counts.get("failure", 0)
        return r

    def requests(self) -> list[str]:
        return [r["request_id"] for r in self._q("SELECT request_id FROM requests ORDER BY submit_time")]

    def owners(self) -> list[str]:
        return [r["owner"] or "" for r in self._q("SELECT DISTINCT owner FROM requests")]

    def active(self, owner: str) -> list[str]:
        """The owner's unfinished requests."""
        marks = ",".join("?" * len(DONE))
        return [r["request_id"] for r in self._q(
            f"SELECT request_id FROM requests WHERE COALESCE(owner, '')=? AND status NOT IN ({marks})", (owner, *DONE))]

    def unfinished(self) -> list[str]:
        marks = ",".join("?" * len(DONE))
        return [r["request_id"] for r in self._q(
            f"SELECT request_id FROM requests WHERE status NOT IN ({marks})", DONE)]

    def set_status(self, request_id: str, status: str, error: str | None = None) -> None:
        finish = now() if status in DONE else None
        with self._lock:
            self._db.execute("UPDATE requests SET status=?, finish_time=COALESCE(?, finish_time),"
                             " error=COALESCE(?, error) WHERE request_id=?", (status, finish, error, request_id))

    def delete_request(self, request_id: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM files WHERE request_id=?", (request_id,))
            self._db.execute("DELETE FROM requests WHERE request_id=?", (request_id,))

    # -- files -----------------------------------------------------------------------------------
    def files(self, request_id: str, status: str | None = None, later_than: str | None = None) -> list[dict[str, Any]]:
        sql, args = "SELECT * FROM files WHERE request_id=?", [request_id]
        if status:
            sql, args = sql + " AND status=?", args + [status]
        if later_than:
            sql, args = sql + " AND created_at>=?", args + [later_than]
        rows = self._q(sql + " ORDER BY created_at, file_id", tuple(args))
        for r in rows:
            r["candidates"] = json.loads(r["candidates"])
        return rows

    def file_done(self, request_id: str, file_id: int, result: dict[str, Any]) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE files SET status=?, size=?, events=?, seconds=?, created_at=?, error=?"
                " WHERE request_id=? AND file_id=? AND status IN ('pending','running')",
                ("success" if result["ok"] else "failure", result.get("size"), result.get("events"),
                 result.get("seconds"), now(), result.get("error"), request_id, file_id))

    def file_running(self, request_id: str, file_id: int) -> None:
        with self._lock:
            self._db.execute("UPDATE files SET status='running' WHERE request_id=? AND file_id=?"
                             " AND status='pending'", (request_id, file_id))

    def remaining(self, request_id: str) -> int:
        return self._q("SELECT COUNT(*) AS n FROM files WHERE request_id=? AND status IN ('pending','running')",
                       (request_id,))[0]["n"]

    def close(self) -> None:
        with self._lock:
            self._db.close()
