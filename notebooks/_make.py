"""Write the notebooks from these cell lists (outputs stay empty in git): python notebooks/_make.py"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).parent
NOTEBOOKS: dict[str, list[tuple[str, str]]] = {}


def notebook(name: str, cells: list[tuple[str, str]]) -> None:
    NOTEBOOKS[name] = cells


notebook("01-open-a-dataset", [
    ("md", """# 1. Open a dataset and look at it

`casa_data.open()` turns a dataset name into files, by the best delivery path the site offers.
With the facility in a box running (`casa facility up`), the demo dataset arrives through the
XCache; without it, from local disk."""),
    ("code", """import awkward as ak
import hist
import matplotlib.pyplot as plt
import mplhep
import casa_data
from casa_data.demo import generate

generate()  # the demo dataset (once; seeded)
ds = casa_data.open("demo/zmumu")
ds"""),
    ("code", """print(ds.describe())
print("events:", ds.nevents)
print("columns:", ds.available_columns())"""),
    ("md", """Only the columns you ask for are read; a filter (a small, safe expression language) keeps
the events you want. Every file's replicas are tried in order."""),
    ("code", """muons = ds.to_awkward(["Muon_pt", "Muon_eta", "Muon_phi", "Muon_charge"], filter="nMuon == 2")
print(len(muons), "events with two muons")
muons[:3].tolist()"""),
    ("code", """import vector
vector.register_awkward()
mu = ak.zip({"pt": muons.Muon_pt, "eta": muons.Muon_eta, "phi": muons.Muon_phi,
             "mass": 0.1057 * ak.ones_like(muons.Muon_pt)}, with_name="Momentum4D")
mass = (mu[:, 0] + mu[:, 1]).mass[muons.Muon_charge[:, 0] != muons.Muon_charge[:, 1]]
h = hist.Hist.new.Reg(120, 0, 120, name="m", label=r"$m_{\\mu\\mu}$ [GeV]").Double().fill(ak.to_numpy(mass))
plt.style.use(mplhep.style.CMS)
fig, ax = plt.subplots()
mplhep.histplot(h, ax=ax)
ax.set_yscale("log")
peak = h.axes[0].centers[60 + h.values()[60:].argmax()]
assert 89 < peak < 93, peak
print(f"Z peak at {peak:.1f} GeV")"""),
    ("md", """The same dataset as Parquet, as Arrow record batches, and as coffea NanoEvents:"""),
    ("code", """pq = casa_data.open("demo/zmumu-parquet")
for batch in pq.iter_batches(["nMuon", "MET_pt"], batch_size=50_000, filter="MET_pt > 40"):
    print(batch.num_rows, batch.schema.names)
events = casa_data.open("demo/zmumu").events(file=0)
print(len(events), events.Muon.fields)"""),
    ("md", """Catalog files name real datasets and their replicas; `casa://` URLs read them through
fsspec, uproot or pyarrow with replica failover:"""),
    ("code", """import uproot
lfn = ds.resolved[0].lfn
with uproot.open(f"casa://demo/zmumu/{lfn}") as f:
    print(f["Events"].num_entries, "entries via casa://")"""),
])


notebook("02-pipeline", [
    ("md", """# 2. A declarative pipeline and its plots

Describe the analysis -- datasets, selection, variables, histograms -- in YAML; `casa run` (or
`run_pipeline`) checks it, pushes what it can down to the delivery path, runs it through
`casa_compute.run` and writes histograms (pickle, ROOT), a PNG each and a JSON summary."""),
    ("code", """from pathlib import Path
from IPython.display import Image, display
from casa_facility.demo import DEMO_PIPELINE
from casa_compute.pipeline import run_pipeline, PipelineError
from casa_data.demo import generate

generate()
print(DEMO_PIPELINE.read_text())"""),
    ("code", """res = run_pipeline(DEMO_PIPELINE, via="xcache", cluster="facility", output="out/xcache", force=True)
summary = res.summary["datasets"]["dy"]
print({k: summary[k] for k in ("events_in", "events_out")})
summary["cutflow"]"""),
    ("code", """display(Image(res.outdir / "mll.png"))
display(Image(res.outdir / "ptll_z.png"))"""),
    ("md", """The same pipeline with the selection pushed into a Skyhook scan next to the storage gives the
same histograms; a second run with nothing changed comes from the cache."""),
    ("code", """import numpy as np
sky = run_pipeline(DEMO_PIPELINE, via="skyhook", output="out/skyhook", force=True)
assert np.allclose(sky.hists["mll"].values(), res.hists["mll"].values())
again = run_pipeline(DEMO_PIPELINE, via="skyhook", output="out/skyhook")
print("cached:", again.cached, f"{again.summary['seconds_to_answer']:.3f} s")"""),
    ("md", """Mistakes are reported with the file, line and column:"""),
    ("code", """bad = Path("bad.yaml")
bad.write_text(DEMO_PIPELINE.read_text().replace("count(Muon) >= 2", "count(Muon) >= = 2"))
try:
    run_pipeline(bad, via="local")
except PipelineError as err:
    print(err)"""),
])


notebook("03-servicex-and-skyhook", [
    ("md", """# 3. ServiceX and Skyhook: let the facility do the selecting

Two ways to move less data. **ServiceX** turns a func_adl query into columnar files (the real
`servicex` client against the facility's endpoint). **Skyhook** runs the projection and filter next
to the storage and sends back only matching rows -- or only a histogram."""),
    ("code", """import awkward as ak
import matplotlib.pyplot as plt
import mplhep
import casa_data
from servicex.query import FuncADL_Uproot

print(casa_data.get_config().path_options("servicex"))"""),
    ("code", """query = (FuncADL_Uproot().FromTree("Events")
         .Where(lambda e: e.nMuon == 2)
         .Select(lambda e: {"pt": e.Muon_pt, "eta": e.Muon_eta, "charge": e.Muon_charge}))
sx = casa_data.open("demo/zmumu", query=query)   # submitted, transformed, downloaded
print(sx.describe())
muons = sx.to_awkward()
muons.fields, len(muons)"""),
    ("md", """The same selection pushed to Skyhook, and the same read client-side: identical events."""),
    ("code", """sky = casa_data.open("demo/zmumu", via="skyhook").to_awkward(["Muon_pt"], filter="nMuon == 2")
local = casa_data.open("demo/zmumu", via="local").to_awkward(["Muon_pt"], filter="nMuon == 2")
assert len(sky) == len(local) == len(muons)
assert ak.all(ak.flatten(sky.Muon_pt) == ak.flatten(local.Muon_pt))
assert ak.all(ak.flatten(muons.pt) == ak.flatten(local.Muon_pt))
print(len(sky), "events, identical through ServiceX, Skyhook and local reads")"""),
    ("md", """Aggregation pushdown: Skyhook fills the histogram on the server; only the bins travel."""),
    ("code", """from casa_data.skyhook import SkyhookDataset
url = casa_data.open("demo/zmumu", via="skyhook").files[0].rsplit("/", 1)[0]
h = SkyhookDataset(url).histogram("MET_pt", bins=50, range=(0, 150), filter="nMuon >= 2")
plt.style.use(mplhep.style.CMS)
mplhep.histplot(h)
plt.xlabel("MET [GeV]")
print(h.sum())"""),
])


notebook("04-object-storage-benchmark", [
    ("md", """# 4. Object-storage benchmarking: every access path, side by side

`casa bench` (and `casa_bench.bench`) reads the same data through each access path --
local disk, S3 through s3fs, S3 through Arrow's native client, XRootD, XCache, Skyhook -- and
reports throughput, column-read rate, small-range latency and bytes moved, with ratios to local
disk. Here: the quick settings, on the demo dataset, against the facility's S3 server."""),
    ("code", """import json
import casa_data
from casa_bench import available_methods, bench, markdown_table
available_methods()"""),
    ("code", """doc = bench(["demo/zmumu"], ["local", "s3fs", "s3-arrow"], quick=True, out_dir="bench-out",
            s3="s3://casa-facility/bench/zmumu")  # the facility bucket
print(markdown_table(doc))"""),
    ("code", """from IPython.display import Image
Image(doc["outputs"]["png"])"""),
    ("md", """Sanity, not speed: every method moved at least the bytes of the columns it read, and the
whole-file reads moved exactly the object's size."""),
    ("code", """for name, r in doc["results"].items():
    print(name, {k: v for k, v in r["bytes"].items()})"""),
    ("md", """**At scale.** `casa bench --concurrency 1,2,4,8,16,32` (here `casa_bench.sweep`) runs each
method with that many concurrent readers (threads, or `mode="processes"`, or the threads of Dask
workers with `workers=[N]`), each on its own ranges, bounded by `duration` and `max_bytes` per
level: aggregate MB/s and Gbps, operations/s, time to first byte, latency p50-p99.9, CPU per GB,
bytes on the wire per byte requested. The saturation point (★) is the fewest readers within 10 % of
the best level's MB/s. Outputs: JSON, CSV, PNGs and an HTML report; `casa bench compare A.json B.json`
puts two runs side by side."""),
    ("code", """from casa_bench import sweep
from casa_bench.report import sweep_table
scan = sweep(["demo/zmumu"], ["local", "s3-arrow"], concurrency=[1, 4], patterns=["ranges:64k"], duration=0.5,
             quick=True, out_dir="bench-out", s3="s3://casa-facility/bench/zmumu")
print(sweep_table(scan))
Image(scan["outputs"]["png_throughput"])"""),
])


notebook("05-clusters", [
    ("md", """# 5. Clusters: the facility's Dask Gateway, local, SLURM and CoffeaCasaCluster

`casa_compute.cluster(kind=...)` gives a Dask cluster with the facility defaults (TLS, loopback
listeners, short lost-worker timeout); `casa_compute.run` feeds a dataset's chunks to coffea
processors on it."""),
    ("code", """import casa_compute, casa_data
from casa_compute.processors import DimuonProcessor
from casa_data.demo import generate

generate()
ds = casa_data.open("demo/zmumu")"""),
    ("md", """**The facility's Dask Gateway.** `casa_compute.cluster("facility")` asks the facility's
gateway for a cluster of your own: you are who your WLCG token says (the same token that reads
the data through the XCache), and only you see, scale and connect to your clusters. Each
scheduler and worker is a job on the facility's batch system (here a one-node SLURM that
`casa facility up` started); everything is TLS. The cluster starts with no worker and adapts
(0 to 4) to the work; idle workers leave after `idle_worker_timeout` seconds, an idle cluster
after `idle_timeout`. The dashboard is reached through the gateway's proxy."""),
    ("code", """with casa_compute.cluster("facility", worker_cores=1, worker_memory=2, idle_worker_timeout=30) as cluster:
    print(cluster.name, cluster.dashboard_link)
    result = casa_compute.run(DimuonProcessor(), ds, cluster=cluster, chunksize=100_000)
print(result.report)"""),
    ("md", """The options the gateway offers, with the facility's limits; a request over a limit is
refused with the option and the limit named. `casa compute clusters list|connect|stop` does the
same from a terminal (or another process)."""),
    ("code", """from casa_compute.clusters.gateway import CasaGateway
with CasaGateway() as gw:
    print(gw.cluster_options())
    print("my running clusters:", [c.name for c in gw.list_clusters()])
try:
    casa_compute.cluster("facility", worker_cores=64)
except casa_compute.ClusterError as e:
    print("refused:", e)"""),
    ("md", """Your own code and packages go to the workers before their first task:
`upload=["my_module.py", "my_package/"]` and `pip=["some-package"]`; `environment={...}` sets
variables on the workers. The same processor on a `LocalCluster` in this process's machine:"""),
    ("code", """with casa_compute.cluster("local", n_workers=2) as cluster:
    result = casa_compute.run(DimuonProcessor(), ds, cluster=cluster, chunksize=100_000)
print(result.report)"""),
    ("md", """**SLURM**: on a batch system the same call scales workers as jobs. Here a one-node Slurm
(munged, slurmctld, slurmd on 127.0.0.1) is started for the notebook."""),
    ("code", """from casa_facility.services.slurm import SlurmService
slurm = SlurmService().start()
try:
    with casa_compute.cluster("slurm", cores=1, memory="1GB", queue=slurm.partition,
                              log_directory="slurm-logs") as cluster:
        cluster.scale(2)
        result = casa_compute.run(DimuonProcessor(), ds, cluster=cluster)
    print(result.report)
finally:
    slurm.stop()"""),
    ("md", """**CoffeaCasaCluster** submits workers to an HTCondor pool; there is none here, so we look
at the submit description it would send (TLS files and the token as encrypted input files)."""),
    ("code", """from casa_compute import CoffeaCasaCluster
cc = CoffeaCasaCluster(cores=1, memory="2GiB", disk="1GiB")
try:
    print(cc.job_script())
finally:
    cc.close()"""),
])


notebook("06-coffea-2025-on-casa", [
    ("md", """# 6. coffea 2025 on casa: `dataset_tools`, dask-awkward and ServiceX's own queries

The workflows coffea 2025+ users already have run unchanged on casa's datasets:
`ds.fileset()` is coffea's current fileset (`object_path` per format, `num_entries`, ...) with
`casa://` URLs, so every reader (a Dask worker too) resolves the file's replicas itself, fails
over between them and uses casa's credentials from its own configuration -- the task graph
holds no token and no key."""),
    ("code", """import awkward as ak
import dask
import hist.dask as hda
import numpy as np
import casa_compute, casa_data
from coffea.dataset_tools import apply_to_fileset, max_chunks_per_file, preprocess
from coffea.nanoevents import NanoAODSchema
from casa_data.demo import generate

generate()
ds = casa_data.open("demo/zmumu")
fileset = ds.fileset()
next(iter(fileset["demo/zmumu"]["files"].items()))"""),
    ("md", """`preprocess` + `apply_to_fileset` + `dask.compute`, exactly as in coffea's documentation,
with a `hist.dask` histogram:"""),
    ("code", """def analysis(events):
    mu = events.Muon[ak.num(events.Muon) >= 2]
    return hda.Hist.new.Reg(60, 0, 120, name="pt", label="muon $p_T$ [GeV]").Double().fill(pt=ak.flatten(mu.pt))

available, _ = preprocess(fileset, step_size=100_000)
(out,) = dask.compute(apply_to_fileset(analysis, available, schemaclass=NanoAODSchema))
h = out["demo/zmumu"]
h.plot1d()
print(int(h.sum()), "muons")"""),
    ("md", """`casa_compute.apply` is the same workflow on casa's clusters (`cluster="local"`,
`"facility"`, a Client), for ROOT TTrees, RNTuple **and Parquet**, with the bearer token forwarded
to the workers, a progress bar, and a failed file named while the others are kept. The same
events as Parquet give the same histogram:"""),
    ("code", """res = casa_compute.apply(analysis, casa_data.open("demo/zmumu-parquet"), progress=False)
hp = res.output["demo/zmumu-parquet"]
assert np.array_equal(hp.values(), h.values())
print(res.report.partitions, "partitions,", res.report.failures or "no failures")"""),
    ("md", """`ds.events(mode="dask")` gives one lazy dask-awkward array over the files of any format,
one partition per step; `casa_compute.run` honours preprocessed steps, so `max_chunks_per_file`
(or `run(..., max_chunks=1)`, `casa run --max-chunks 1`) makes a quick test:"""),
    ("code", """events = ds.events(mode="dask", step_size=100_000)
print(events.npartitions, "partitions")
from casa_compute.processors import DimuonProcessor
quick = casa_compute.run(DimuonProcessor(), max_chunks_per_file(available, 1), progress=False)
print(quick.report)"""),
    ("md", """**ServiceX's own query forms.** The AGC's ttbar ServiceX variant sends an `uproot-raw`
query with a tree-name mapping, `filter_name`, a cut using the transformer's functions
(`count_nonzero(..., axis=1)`) and `copy_histograms`; casa's endpoint takes it as it is (the cut
is evaluated by casa's safe expression core, never `eval`):"""),
    ("code", """query = [{"treename": {"Events": "servicex"}, "filter_name": ["Muon_pt", "Muon_eta", "MET_pt"],
          "cut": "(count_nonzero(Muon_pt > 20, axis=1) >= 2) & (MET_pt < 100)"},
         {"copy_histograms": ["cutflow*"]}]
sx = casa_data.open("demo/zmumu", query=query, format="root", progress=False)
got = sx.to_awkward()
want = ds.to_awkward(["Muon_pt"], filter="count(Muon_pt > 20) >= 2 and MET_pt < 100")
assert len(got) == len(want) and sx.tree == "servicex"
print(len(got), "events delivered, tree", sx.tree)"""),
])


def main() -> None:
    for name, cells in NOTEBOOKS.items():
        nb = new_notebook(cells=[new_markdown_cell(src) if kind == "md" else new_code_cell(src)
                                 for kind, src in cells])
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nbformat.write(nb, HERE / f"{name}.ipynb")
        print(HERE / f"{name}.ipynb")


if __name__ == "__main__":
    main()
