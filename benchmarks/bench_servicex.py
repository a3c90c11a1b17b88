"""ServiceX delivery through casa's endpoint and the unmodified servicex 3.3 client.

1. Latency of a 10k-event dimuon query (the first 10k events of
   ../shared/data/agc/open-data-example.root): first delivery (a new request each time:
   ``ignore_cache=True``) and cache hit, each the median of several runs, in a warm process
   (servicex imported, endpoint started and its workers warm).
2. Throughput over 1M events (10 inputs of 100k real events) against the same func_adl_uproot
   query run in-process (the generated ``run_query``, dask's default scheduler) in the same run:
   ServiceX = submit, transform (2 workers), upload to S3, download, then read into awkward.
   Then the same over 2M events in 2 files of 1M (``--big-files``; 0 skips it), to show what is
   per file (client download, worker set-up) and what is per event.

Targets: first delivery < 3 s, cache hit < 0.3 s, throughput >= 0.7x in-process.

    python benchmarks/bench_servicex.py [--repeat 3] [--files 10] [--local]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import awkward as ak
import uproot

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import write_section  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT.parent / "shared" / "data" / "agc" / "open-data-example.root"
BRANCHES = ["nMuon", "Muon_pt", "Muon_eta", "Muon_phi", "Muon_mass", "Muon_charge"]


def query():
    from servicex.query import FuncADL_Uproot

    return FuncADL_Uproot().FromTree("Events").Where(lambda e: e.nMuon >= 2).Select(lambda e: {
        "pt": e.Muon_pt, "eta": e.Muon_eta, "phi": e.Muon_phi, "mass": e.Muon_mass, "charge": e.Muon_charge})


def small_file(out: Path, n: int = 10_000) -> Path:
    src = uproot.open(SOURCE)["Events"].arrays(BRANCHES, entry_stop=n)
    muon = ak.zip({b.split("_", 1)[1]: src[b] for b in BRANCHES[1:]})
    p = out / "dimuon_10k.root"
    with uproot.recreate(p) as f:
        t = f.mktree("Events", {"nMuon": src.nMuon.type, "Muon": muon.type})
        t.extend({"nMuon": src.nMuon, "Muon": muon})
    return p


def big_inputs(out: Path, n_files: int) -> list[Path]:
    paths = []
    for i in range(n_files):  # distinct names, same real bytes (symlinks: no copy needed)
        p = out / f"agc_{i}.root"
        p.symlink_to(SOURCE)
        paths.append(p)
    return paths


def in_process(files: list[Path]) -> tuple[float, int]:
    from func_adl_uproot import generate_python_source

    ns: dict = {}
    exec(generate_python_source(query().generate_selection_string()), ns)
    t0 = time.perf_counter()
    arr = ns["run_query"](input_filenames=[str(f) for f in files], tree_name="Events")
    return time.perf_counter() - t0, len(arr)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--files", type=int, default=10, help="inputs of 100k events for the throughput part")
    ap.add_argument("--big-files", type=int, default=2, help="inputs of 1M events for the second layout")
    ap.add_argument("--local", action="store_true", help="outputs to the endpoint's dir instead of S3")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run (1 repetition, 2 inputs, no 1M-event files); prints, leaves RESULTS.md as it is")
    a = ap.parse_args()
    if a.quick:
        a.repeat, a.files, a.big_files = 1, 2, 0
    assert SOURCE.exists(), f"{SOURCE} is missing: the benchmark needs ../shared/data"

    work = Path(tempfile.mkdtemp(prefix="casa-bench-sx-"))
    os.environ["CASA_DATA_DIR"] = str(work / "data")
    import casa_data
    from casa_data.config import reset_config
    from casa_facility.services.servicex import OutputSeaweedFS, ServiceXEndpoint

    reset_config()
    small = small_file(work)
    big = big_inputs(work, a.files)
    s3 = None if a.local else OutputSeaweedFS(work / "s3").start()
    sx = ServiceXEndpoint(work / "sx", s3=s3).start()
    try:
        def deliver(files, **kw):
            t0 = time.perf_counter()
            ds = casa_data.open(files, query=query(), endpoint=sx.url, progress=False, **kw)
            return time.perf_counter() - t0, ds

        def phases(ds, t_total: float, t_end_wall: float) -> tuple[float, float, float]:
            """(before submit, transform, after the last file) from the endpoint's own timestamps."""
            import datetime as dt

            import httpx

            # the endpoint authenticates: an access token traded for its refresh token, as the client does
            tok = httpx.post(f"{sx.url}/token/refresh",
                             headers={"Authorization": f"Bearer {sx.refresh_token}"}).json()["access_token"]
            st = httpx.get(f"{sx.url}/servicex/transformation/{ds.metadata['servicex']['request_id']}",
                           headers={"Authorization": f"Bearer {tok}"}).json()
            ts = [dt.datetime.fromisoformat(st[k]).replace(tzinfo=dt.UTC).timestamp()
                  for k in ("submit-time", "finish-time")]
            start = t_end_wall - t_total
            return ts[0] - start, ts[1] - ts[0], t_end_wall - ts[1]

        deliver([small], ignore_cache=True)  # imports servicex, aioboto3 in this process
        first = [deliver([small], ignore_cache=True)[0] for _ in range(a.repeat)]
        hits = [deliver([small])[0] for _ in range(max(5, a.repeat))]

        def cpu() -> dict[str, float]:
            """CPU seconds so far: this process (the servicex client), the endpoint (app and
            transform workers), the S3 server."""
            import psutil

            def tree(pid: int) -> float:
                procs = [psutil.Process(pid)]
                procs += procs[0].children(recursive=True)
                return sum(sum(p.cpu_times()[:2]) for p in procs)

            out = {"client": sum(psutil.Process().cpu_times()[:2]), "endpoint": tree(sx.proc.pid)}
            if s3 is not None:
                out["S3 server"] = tree(s3.proc.pid)
            return out

        def throughput(files):
            rows, split, used = [], [], []
            for _ in range(a.repeat):  # alternate, so load changes hit both alike
                t_in, n_in = in_process(files)
                c0 = cpu()
                t_sx, ds = deliver(files, ignore_cache=True)
                used.append({k: v - c0[k] for k, v in cpu().items()})
                split.append(phases(ds, t_sx, time.time()))
                t0 = time.perf_counter()
                n_sx = len(ds.to_awkward())
                t_read = time.perf_counter() - t0
                assert n_sx == n_in, (n_sx, n_in)
                rows.append((t_in, t_sx, t_read))
            return rows, split, used

        rows, split, used_small = throughput(big)
        n_events = a.files * uproot.open(SOURCE)["Events"].num_entries
        big_rows = []
        if a.big_files:
            from bench_open import replicate

            (work / "big").mkdir()
            big_rows, _, _ = throughput(replicate(work / "big", a.big_files, 1_000_000))
    finally:
        sx.stop()
        if s3 is not None:
            s3.stop()

    med = statistics.median
    t_in = med(r[0] for r in rows)
    t_sx = med(r[1] for r in rows)
    t_all = med(r[1] + r[2] for r in rows)
    cpu_text = ", ".join(f"{k} {med(u[k] for u in used_small):.2f}" for k in used_small[0])
    big_table = ""
    if big_rows:
        n_big = a.big_files * 1_000_000
        b_in, b_sx = med(r[0] for r in big_rows), med(r[1] for r in big_rows)
        b_all = med(r[1] + r[2] for r in big_rows)
        big_table = (f"| in-process, {n_big / 1e6:.0f}M events in {a.big_files} files of 1M | {b_in:.2f} s = "
                     f"{n_big / b_in / 1e6:.2f} M ev/s | baseline |\n"
                     f"| ServiceX delivery, same files | {b_sx:.2f} s = **{b_in / b_sx:.2f}x** | >= 0.7x |\n"
                     f"| ServiceX delivery + read into awkward | {b_all:.2f} s = **{b_in / b_all:.2f}x** | |\n")
    out = "local output dir (endpoint's S3 subset)" if a.local else "SeaweedFS S3 (a bucket per request)"
    body = f"""## ServiceX delivery (casa endpoint + unmodified servicex 3.3.1 client)

`benchmarks/bench_servicex.py`: dimuon func_adl query (`nMuon >= 2`, 5 muon columns), parquet
output to {out}, 2 transform workers, client polling 0.1 s on loopback (see
`casa_data/servicex/client.py`). Medians of {a.repeat} runs (cache hits: {len(hits)}).

| measure | result | target |
|---|---|---|
| first delivery, 10k events (new request) | {med(first):.2f} s (min {min(first):.2f}) | < 3 s |
| cache hit, 10k events | {med(hits):.3f} s (min {min(hits):.3f}) | < 0.3 s |
| in-process func_adl_uproot, {n_events / 1e6:.1f}M events | {t_in:.2f} s = {n_events / t_in / 1e6:.2f} M ev/s | baseline |
| ServiceX delivery, {n_events / 1e6:.1f}M events (files on local disk) | {t_sx:.2f} s = {n_events / t_sx / 1e6:.2f} M ev/s = **{t_in / t_sx:.2f}x** | >= 0.7x |
| ServiceX delivery + read into awkward | {t_all:.2f} s = {n_events / t_all / 1e6:.2f} M ev/s = **{t_in / t_all:.2f}x** | |
{big_table}
Per run (in-process / delivery / read, s): {'; '.join(f'{r[0]:.2f} / {r[1]:.2f} / {r[2]:.2f}' for r in rows)}.
Where the 1M delivery time goes (median; endpoint timestamps): {med(p[0] for p in split):.2f} s before
the request is stored (health check, query validated, client set-up, dataset lookup, bucket
creation), {med(p[1] for p in split):.2f} s transforming {a.files} files (2 workers: func_adl_uproot, write
parquet, upload), {med(p[2] for p in split):.2f} s after the last file (client download of the last
outputs, status check, Dataset).

CPU seconds per {n_events / 1e6:.0f}M-event delivery (median): {cpu_text} (the endpoint figure
misses the sandboxed transforms, which run as another user in their own namespaces); the
in-process run takes {t_in:.2f} s on the same 2 cores.

What the client costs and what was done (2026-12-03): the unmodified servicex 3.3.1 client
builds a new httpx client (and a retrying transport with two more) for nearly every call and a
new aiobotocore S3 client for every output it downloads; each loaded the CA bundle into a new TLS
context (~36 ms of CPU, even over http). casa now shares those contexts while a delivery runs
(`casa_data/servicex/client.py`, `_shared_ssl`): a cache hit went from 0.21 s to 0.03 s, a first
delivery from 1.3 s to 0.9 s, and the client's CPU per 1M-event delivery from 1.06 s (2026-11-30) to about
0.75 s. What remains is per output file: a HEAD and a GET through a new S3 client, writing the
file to the local cache, and reading it back. On the endpoint, one 100k-event transform
(func_adl_uproot through dask-awkward, then Parquet) takes 0.14 s in a plain fork of a warm
process (0.08 s query, 0.055 s `ak.to_parquet`; the codec hardly matters: zstd 0.048 s, none
0.041 s) and 0.24-0.31 s inside the sandbox while the client, the S3 server and the other worker
share the 2 cores; the upload adds 0.04 s. Polling every 0.25 s or 0.5 s instead of 0.1 s saved
~0.2 s of client CPU but no wall time (measured 2026-11-30), so the 0.1 s poll stays. Each file
is written as Parquet, uploaded, downloaded and read back, where the in-process baseline keeps
everything in memory: on 2 cores shared by the client, the workers and the S3 server (load
average at the end: {os.getloadavg()[0]:.1f}), the 0.7x throughput target is **not met**.
"""  # noqa: E501 (a markdown table: one row per line)
    print(body)
    if not a.quick:
        write_section("servicex", body)


if __name__ == "__main__":
    main()
