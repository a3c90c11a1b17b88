"""``casa bench`` method ``skyhook``: the files served by a Skyhook service started for the run.

The service runs next to the files (their local directory, as on a storage node). ``read_columns``
is a projection scan on the server (every event, the asked columns, Arrow back); ``read_whole``
and ``read_range`` use the raw byte action (no pushdown: what fsspec/uproot see). Bytes are
counted by a TCP relay in front of the service. Filter and histogram pushdown, where Skyhook
gains most, are measured by ``benchmarks/bench_skyhook.py``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from casa_bench.base import BenchContext, BenchFile, BenchMethod

__all__ = ["SkyhookMethod"]


class SkyhookMethod(BenchMethod):
    name = "skyhook"
    description = "Skyhook Flight service next to the files (projection pushdown, Arrow back)"

    def setup(self, ctx: BenchContext) -> None:
        from casa_facility.services.skyhook import SkyhookService

        root = os.path.commonpath([str(f.local.parent) for f in ctx.files])
        self.rel = {f.local: os.path.relpath(f.local, root) for f in ctx.files}
        self.service = SkyhookService(root).start()  # its own temporary workdir (token, log)
        self.address = self.service.address

    def server_processes(self) -> dict[str, list[int]]:
        return {"skyhook": [p.pid for p in self.service.procs.values()]}

    def teardown(self) -> None:
        svc = getattr(self, "service", None)
        if svc is not None:
            svc.stop()

    def _client(self):
        from casa_data.skyhook import SkyhookClient

        return SkyhookClient(self.address, token=self.service.token, workers=1)

    def read_whole(self, f: BenchFile) -> int:
        from casa_data.paths.skyhook import SkyhookFileSystem

        fs = SkyhookFileSystem(token=self.service.token)
        url = f"skyhook://{self.address}/{self.rel[f.local]}"
        return len(fs._read(url, 0, f.size))

    def read_columns(self, f: BenchFile, columns: list[str]) -> int:
        from casa_data.skyhook import Request

        req = Request(path=self.rel[f.local], columns=columns, tree=f.tree)
        return self._client().read(req).num_rows

    def read_range(self, f: BenchFile, start: int, length: int) -> int:
        data = self._client().action("read", {"path": self.rel[f.local], "start": start,
                                              "end": start + length}, raw=True)
        return len(data)

    @contextlib.contextmanager
    def counting(self) -> Iterator[None]:
        from casa_bench.proxy import CountingProxy

        with CountingProxy(f"http://{self.service.address}") as proxy, super().counting():
            self.address = f"127.0.0.1:{proxy.port}"
            try:
                yield
            finally:
                self.address = self.service.address
                self.counted = proxy.down
