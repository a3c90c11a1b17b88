"""Processors that misbehave on purpose, for fault tests (importable on every worker)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from coffea import processor

from .processors import DimuonProcessor

__all__ = ["FlakyDimuon", "BrokenRangeDimuon", "SlowDimuon", "TokenProbe", "LeakyDimuon",
           "WorkerKiller"]


class FlakyDimuon(DimuonProcessor):
    """Fails the first attempt of every chunk (a marker file per chunk in ``state_dir``)."""

    def __init__(self, state_dir: str):
        self.state_dir = state_dir

    def process(self, events):
        m = events.metadata
        marker = Path(self.state_dir) / f"{Path(m['filename']).name}-{m['entrystart']}"
        if not marker.exists():
            marker.touch()
            raise OSError(f"transient read error (first attempt) at {m['entrystart']}")
        return super().process(events)


class BrokenRangeDimuon(DimuonProcessor):
    """Always fails on the chunk of ``filename`` that starts at ``start``."""

    def __init__(self, filename: str, start: int):
        self.filename, self.start = filename, start

    def process(self, events):
        m = events.metadata
        if Path(m["filename"]).name == self.filename and m["entrystart"] == self.start:
            raise ValueError("corrupt basket")
        return super().process(events)


class SlowDimuon(DimuonProcessor):
    """Sleeps ``seconds`` per chunk (to kill workers mid-computation)."""

    def __init__(self, seconds: float):
        self.seconds = seconds

    def process(self, events):
        time.sleep(self.seconds)
        return super().process(events)


class TokenProbe(processor.ProcessorABC):
    """Returns whether the worker's $BEARER_TOKEN_FILE holds ``expected_sha``'s token."""

    def __init__(self, expected_sha: str):
        self.expected_sha = expected_sha

    def process(self, events):
        import hashlib

        path = os.environ.get("BEARER_TOKEN_FILE", "")
        ok = bool(path) and hashlib.sha256(Path(path).read_bytes()).hexdigest() == self.expected_sha
        mode = oct(os.stat(path).st_mode & 0o777) if path else ""
        return {"ok": int(ok), "chunks": 1, "modes": {mode}}

    def postprocess(self, accumulator):
        return accumulator


class LeakyDimuon(DimuonProcessor):
    """Raises an error whose text contains the bearer token and a credential URL."""

    def process(self, events):
        token = Path(os.environ["BEARER_TOKEN_FILE"]).read_text().strip()
        raise OSError(f"open root://cache//f.root?authz={token} failed (token {token})")


class WorkerKiller(DimuonProcessor):
    """Kills the worker process on the chunk of ``filename`` starting at ``start``, every time."""

    def __init__(self, filename: str, start: int):
        self.filename, self.start = filename, start

    def process(self, events):
        m = events.metadata
        if Path(m["filename"]).name == self.filename and m["entrystart"] == self.start:
            os._exit(17)
        return super().process(events)
