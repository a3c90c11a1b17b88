"""``casa bench`` method ``servicex``: the columns delivered by casa's ServiceX endpoint started for the run.

The endpoint (one transform worker, outputs in its local state directory) runs next to the files.
``read_columns`` is one full delivery through the real client, ``casa_data.open(path, query=...)``
with ``ignore_cache=True``: submit, transform (every event, the asked columns), write Parquet,
download; the events counted are those of the delivered files. ROOT input is queried with an
UprootRaw ``filter_name``, Parquet input with a python function (``ak.from_parquet``). ServiceX
delivers query results, not a file's bytes: ``read_whole`` and ``read_range`` are
:class:`~casa_bench.methods.Unsupported`. Bytes moved are the sizes of the delivered files.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from casa_bench.base import BenchContext, BenchFile, BenchMethod, Unsupported

__all__ = ["ServiceXMethod"]

NO_BYTES = "ServiceX delivers query results (columns of selected events), not a file's bytes"


class ServiceXMethod(BenchMethod):
    name = "servicex"
    description = "casa ServiceX endpoint next to the files (each read a full delivery: transform, Parquet, download)"

    def setup(self, ctx: BenchContext) -> None:
        from casa_facility.services.servicex import ServiceXEndpoint

        self.dir = Path(tempfile.mkdtemp(prefix="casa-bench-servicex-"))  # state, outputs, log
        self.delivered: list[Path] = []
        # one file per request: one worker is enough and leaves the other core to the client
        self.endpoint = ServiceXEndpoint(self.dir, workers=1).start()

    def teardown(self) -> None:
        sx = getattr(self, "endpoint", None)
        if sx is not None:
            sx.stop()
        for p in getattr(self, "delivered", []):  # the client's downloads (in casa's data dir)
            p.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                p.parent.rmdir()  # <cache>/<request id>/, once empty
        if getattr(self, "dir", None) is not None:
            shutil.rmtree(self.dir, ignore_errors=True)

    def _query(self, f: BenchFile, columns: list[str]):
        if f.format == "root":
            return {"treename": f.tree, "filter_name": list(columns)}
        from servicex.query import PythonFunction

        return PythonFunction(f"def read(path):\n    import awkward as ak\n"
                              f"    return ak.from_parquet(path, columns={list(columns)!r})\n")

    def read_whole(self, f: BenchFile) -> int:
        raise Unsupported(NO_BYTES)

    def read_columns(self, f: BenchFile, columns: list[str]) -> int:
        import casa_data

        ds = casa_data.open([str(f.local)], query=self._query(f, columns), endpoint=self.endpoint.url,
                            progress=False, ignore_cache=True)
        self.delivered += [Path(u.removeprefix("file://")) for u in ds.files]
        return ds.nevents

    def read_range(self, f: BenchFile, start: int, length: int) -> int:
        raise Unsupported(NO_BYTES)

    @contextlib.contextmanager
    def counting(self) -> Iterator[None]:
        first = len(self.delivered)
        with super().counting():
            try:
                yield
            finally:
                self.counted = sum(p.stat().st_size for p in self.delivered[first:])
