"""What a run returns: the output, a report (events, bytes, time per chunk, failures), errors,
and the worker plugin that forwards the bearer token without ever printing it."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin

__all__ = ["ChunkStat", "ChunkFailure", "Report", "RunResult", "RunError", "TokenPlugin"]


@dataclass
class ChunkStat:
    """A processed chunk: where, how many events and bytes, how long, how many attempts."""

    index: int
    dataset: str
    file: str
    start: int
    stop: int
    events: int
    bytes_read: int
    seconds: float
    attempts: int = 1
    cpu_seconds: float = 0.0
    host: str = ""
    pid: int = 0
    #: wall-clock time (``time.time()``) the chunk started: a timeline of the run
    started: float = 0.0


@dataclass
class ChunkFailure:
    """A chunk that failed every attempt."""

    index: int
    dataset: str
    file: str
    start: int
    stop: int
    error: str
    attempts: int
    traceback: str = ""

    def __str__(self) -> str:
        return (f"{self.file} entries [{self.start}, {self.stop}) failed after {self.attempts} "
                f"attempt(s): {self.error}")


@dataclass
class Report:
    """Bookkeeping of one run. ``missing`` lists what the output does not contain."""

    chunks_planned: int = 0
    stats: list[ChunkStat] = field(default_factory=list)
    failures: list[ChunkFailure] = field(default_factory=list)
    bad_files: dict[str, str] = field(default_factory=dict)  # files that could not be opened
    wall_seconds: float = 0.0
    dashboard: str | None = None
    stalled: str | None = None  # why the run gave up waiting for workers

    def add(self, stats: Iterable[ChunkStat], failures: Iterable[ChunkFailure], wall: float) -> None:
        self.stats = sorted(stats, key=lambda s: s.index)
        self.failures = sorted(failures, key=lambda f: f.index)
        self.wall_seconds = wall

    @property
    def events(self) -> int:
        return sum(s.events for s in self.stats)

    @property
    def bytes_read(self) -> int:
        return sum(s.bytes_read for s in self.stats)

    @property
    def chunk_seconds(self) -> list[float]:
        return [s.seconds for s in self.stats]

    @property
    def cpu_seconds(self) -> float:
        return sum(s.cpu_seconds for s in self.stats)

    @property
    def retried(self) -> list[ChunkStat]:
        return [s for s in self.stats if s.attempts > 1]

    @property
    def missing(self) -> list[str]:
        """Human-readable list of what is not in the output."""
        return ([f"{url} (whole file: {err})" for url, err in self.bad_files.items()]
                + [str(f) for f in self.failures])

    @property
    def ok(self) -> bool:
        return not self.failures and not self.bad_files

    def describe_failures(self) -> str:
        if self.stalled:
            return f"{self.stalled}; {len(self.failures)} chunk(s) not processed"
        missing = self.missing
        head = f"{len(missing)} part(s) of the input failed; first: {missing[0]}" if missing else ""
        return head + ("" if len(missing) < 2 else f" (+{len(missing) - 1} more, see .partial.report)")

    def summary(self) -> str:
        rate = self.events / self.wall_seconds if self.wall_seconds else 0.0
        s = (f"{self.events:,} events in {len(self.stats)}/{self.chunks_planned} chunks, "
             f"{self.bytes_read / 1e6:.1f} MB read, {self.wall_seconds:.2f} s "
             f"({rate / 1e3:.0f} kHz)")
        if self.retried:
            s += f", {len(self.retried)} chunk(s) retried"
        if not self.ok:
            s += f"; MISSING {len(self.missing)}: " + "; ".join(self.missing[:3])
        return s

    def __str__(self) -> str:
        return self.summary()


@dataclass
class RunResult:
    """``output`` (the processor's merged output) and ``report``."""

    output: Any
    report: Report

    def __iter__(self) -> Iterator[Any]:
        return iter((self.output, self.report))


class RunError(RuntimeError):
    """Some chunks or files failed; ``partial`` is the :class:`RunResult` without them."""

    def __init__(self, message: str, partial: RunResult):
        super().__init__(message)
        self.partial = partial


class TokenPlugin(WorkerPlugin):
    """Worker plugin: writes the bearer token (0600) next to the worker, sets BEARER_TOKEN_FILE.

    The token is never part of a repr, log line or error message.
    """

    idempotent = False

    def __init__(self, token: bytes):
        self._token = token

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> TokenPlugin:
        return cls(Path(path).read_bytes())

    def setup(self, worker: Any) -> None:
        d = Path(getattr(worker, "local_directory", None) or "/tmp")
        path = d / "casa_bearer_token"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(self._token)
        os.environ["BEARER_TOKEN_FILE"] = str(path)

    def teardown(self, worker: Any) -> None:
        pass

    def __repr__(self) -> str:
        return "<TokenPlugin token=***>"

    __str__ = __repr__
