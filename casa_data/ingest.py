"""Copy a dataset's files into an S3 bucket (optionally as Parquet) and record the new replicas.

>>> ingest("cms/dimuon-2012", "s3://data/dimuon", to="parquet")      # doctest: +SKIP

Guarantees:

* **Checksummed.** Every PUT and every multipart part carries its SHA-256; the server rejects a
  part whose bytes differ (``BadDigest``). The object records the SHA-256 of the whole file in its
  metadata (``x-amz-meta-casa-sha256``); ``verify=True`` re-reads the object and compares.
* **Nothing half-written is visible.** Files up to ``part_size`` go in one PUT; larger ones as a
  multipart upload, which S3 exposes only once completed.
* **Resumable.** A re-run skips objects already complete with the right SHA-256, and resumes a
  pending multipart upload: parts whose ETag (MD5) matches the local bytes are kept.
* **Catalog.** The new replicas are written into the dataset's catalog file (comments kept), or,
  for a converted or renamed dataset, as a new dataset entry.
"""

from __future__ import annotations

import base64
import hashlib
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .catalog import BUILTIN, DatasetSpec, get_catalog
from .config import get_config, user_config_dir
from .errors import CasaError, CatalogError, FileReadError
from .paths import get_path
from .paths.s3 import S3Path, s3_errors, split_s3_url
from .resolver import Candidate, resolve

__all__ = ["ingest", "upload_file", "convert_to_parquet", "IngestResult", "FileResult", "MIN_PART"]

MIN_PART = 5 << 20          # S3's smallest part (except the last)
DEFAULT_PART = 16 << 20
ROW_GROUP_BYTES = 64 << 20  # uncompressed bytes per Parquet row group
PartHook = Callable[[str, int, int], None]  # (key, part number, bytes) after each part


@dataclass
class FileResult:
    """What happened to one file."""

    lfn: str
    url: str
    size: int
    sha256: str
    nevents: int | None = None
    status: str = "uploaded"  # uploaded | resumed | skipped
    parts_reused: int = 0
    lfn_is_replica: bool = False  # the LFN itself was a readable path/URL (keep it as a replica)


@dataclass
class IngestResult:
    dataset: str          # the catalog entry holding the new replicas
    dest: str
    format: str
    catalog_file: Path | None
    files: list[FileResult] = field(default_factory=list)

    @property
    def bytes(self) -> int:
        return sum(f.size for f in self.files)


# -- hashing -----------------------------------------------------------------------------------
def _sha256_file(path: str | Path, chunk: int = 8 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


# -- upload ------------------------------------------------------------------------------------
def upload_file(client: Any, local: str | Path, url: str, *, part_size: int = DEFAULT_PART,
                metadata: dict[str, str] | None = None, progress: Callable[[int], None] | None = None,
                on_part: PartHook | None = None, endpoint: str = "", secrets: list[str] = ()) -> FileResult:
    """Upload ``local`` to ``url`` (``s3://bucket/key``) checksummed and resumable."""
    if part_size < MIN_PART:
        raise CasaError(f"part_size must be at least {MIN_PART} bytes (S3's minimum), not {part_size}")
    bucket, key = split_s3_url(url)
    size = os.path.getsize(local)
    sha = _sha256_file(local)
    meta = {"casa-sha256": sha, **(metadata or {})}
    result = FileResult(lfn=str(local), url=url, size=size, sha256=sha)
    with s3_errors(url, endpoint, list(secrets)):
        try:
            head = client.head_object(Bucket=bucket, Key=key)
        except client.exceptions.ClientError as err:
            if str(err.response.get("Error", {}).get("Code")) not in ("404", "NoSuchKey", "NotFound"):
                raise
            head = None
        if head and head["ContentLength"] == size and head.get("Metadata", {}).get("casa-sha256") == sha:
            result.status = "skipped"
            if progress:
                progress(size)
            return result
        with open(local, "rb") as f:
            if size <= part_size:  # one atomic PUT
                body = f.read()
                client.put_object(Bucket=bucket, Key=key, Body=body, Metadata=meta,
                                  ChecksumSHA256=_b64(hashlib.sha256(body).digest()))
                if progress:
                    progress(size)
                if on_part:
                    on_part(key, 1, size)
                return result
            _multipart(client, f, bucket, key, size, part_size, meta, result, progress, on_part)
    return result


def _pending_upload(client: Any, bucket: str, key: str, f, size: int, part_size: int) -> tuple[str | None, dict[int, str]]:
    """A pending upload of ``key`` and its parts that match the local bytes (others aborted)."""
    best: tuple[str | None, dict[int, str]] = (None, {})
    uploads = client.list_multipart_uploads(Bucket=bucket, Prefix=key).get("Uploads") or []
    for up in uploads:
        if up["Key"] != key:
            continue
        good: dict[int, str] = {}
        parts = client.list_parts(Bucket=bucket, Key=key, UploadId=up["UploadId"]).get("Parts") or []
        for p in parts:
            n, start = p["PartNumber"], (p["PartNumber"] - 1) * part_size
            want = min(part_size, size - start)
            if want <= 0 or p["Size"] != want:
                continue
            f.seek(start)
            if hashlib.md5(f.read(want)).hexdigest() == p["ETag"].strip('"'):
                good[n] = p["ETag"]
        if best[0] is None or len(good) > len(best[1]):
            if best[0] is not None:
                client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=best[0])
            best = (up["UploadId"], good)
        else:
            client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=up["UploadId"])
    return best


def _multipart(client, f, bucket, key, size, part_size, meta, result, progress, on_part) -> None:
    upload_id, done = _pending_upload(client, bucket, key, f, size, part_size)
    if upload_id is None:
        upload_id = client.create_multipart_upload(Bucket=bucket, Key=key, Metadata=meta,
                                                   ChecksumAlgorithm="SHA256")["UploadId"]
    else:
        result.status, result.parts_reused = "resumed", len(done)
    parts = []
    nparts = (size + part_size - 1) // part_size
    for n in range(1, nparts + 1):
        f.seek((n - 1) * part_size)
        body = f.read(part_size)
        checksum = _b64(hashlib.sha256(body).digest())
        if n in done:
            etag = done[n]
        else:
            etag = client.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=n,
                                      Body=body, ChecksumSHA256=checksum)["ETag"]
            if on_part:
                on_part(key, n, len(body))
        parts.append({"PartNumber": n, "ETag": etag, "ChecksumSHA256": checksum})
        if progress:
            progress(len(body))
    client.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id,
                                     MultipartUpload={"Parts": parts})


def verify_object(path: S3Path, url: str, sha256: str, size: int) -> None:
    """Re-read ``url`` and compare size and SHA-256 (raises FileReadError on a mismatch)."""
    fs = path.filesystem(url)
    h, n = hashlib.sha256(), 0
    with fs.open(url, "rb", block_size=8 << 20, cache_type="none") as f:
        while block := f.read(8 << 20):
            h.update(block)
            n += len(block)
    if n != size or h.hexdigest() != sha256:
        raise FileReadError(url, f"verification failed: {n} bytes, sha256 {h.hexdigest()[:16]}..., "
                                 f"expected {size} bytes, {sha256[:16]}...")


# -- ROOT -> Parquet ---------------------------------------------------------------------------
def convert_to_parquet(cand: Candidate, tree: str, out: str | Path, row_group_events: int | None = None,
                       compression: str = "zstd") -> int:
    """Write the TTree ``tree`` of ``cand`` to Parquet; returns the number of events.

    Row groups hold ``row_group_events`` events, by default about 64 MiB of uncompressed data
    (at least 10,000 and at most 1,000,000 events): big enough for efficient column reads, small
    enough to prune and to parallelise over.
    """
    import awkward as ak
    import pyarrow.parquet as pq
    import uproot

    with uproot.open(cand.path.reader_url(cand.url), **cand.path.uproot_options(cand.url)) as f:
        t = f[tree]
        total = int(t.num_entries)
        step = row_group_events
        if step is None:
            probe = t.arrays(entry_stop=min(total, 1000), library="ak")
            per_event = max(1, probe.nbytes // max(1, len(probe)))
            step = int(min(1_000_000, max(10_000, ROW_GROUP_BYTES // per_event)))
        writer = None
        try:
            for arr in t.iterate(step_size=step, library="ak"):
                table = ak.to_arrow_table(arr, extensionarray=False, list_to32=False)
                if writer is None:
                    writer = pq.ParquetWriter(str(out), table.schema, compression=compression)
                writer.write_table(table, row_group_size=step)
            if writer is None:  # an empty tree: still a valid file with the schema
                table = ak.to_arrow_table(t.arrays(library="ak"), extensionarray=False, list_to32=False)
                writer = pq.ParquetWriter(str(out), table.schema, compression=compression)
                writer.write_table(table)
        finally:
            if writer is not None:
                writer.close()
    return total


# -- the whole job -----------------------------------------------------------------------------
def _readable(cands: list[Candidate], lfn: str) -> Candidate:
    failures = []
    for c in cands:
        try:
            c.path.size(c.url)
            return c
        except Exception as err:  # noqa: BLE001 - try the next replica
            failures.append(f"{c.url}: {type(err).__name__}")
    raise FileReadError(lfn, "no readable replica to copy from (" + "; ".join(failures) + ")")


def _rel_names(lfns: list[str]) -> list[str]:
    """Object names under the prefix: the LFNs relative to their common directory."""
    stripped = [lfn.split("://", 1)[-1] for lfn in lfns]
    common = os.path.commonpath([os.path.dirname(s) for s in stripped]) if len(stripped) > 1 else os.path.dirname(stripped[0])
    return [os.path.relpath(s, common) if common else s.lstrip("/") for s in stripped]


def ingest(dataset: str, dest: str, *, to: str | None = None, name: str | None = None,
           catalog: Any = None, catalog_out: str | Path | None = None, part_size: int = DEFAULT_PART,
           row_group_events: int | None = None, verify: bool = True, progress: bool = False,
           on_part: PartHook | None = None, path: S3Path | None = None) -> IngestResult:
    """Copy ``dataset`` to ``dest`` (``s3://bucket/prefix``) and record the replicas.

    Parameters
    ----------
    to : ``"parquet"`` converts ROOT TTrees to Parquet (a new dataset, ``<name>-parquet``).
    name : the catalog entry to write; default the dataset itself (or ``<name>-parquet``).
    catalog_out : the catalog file for a new entry (default: the dataset's catalog file if
        writable, else ``~/.config/casa/catalogs/ingested.yaml``).
    verify : re-read every object and compare its SHA-256 with the source's.
    on_part : called after each uploaded part (progress hooks, tests).
    """
    if to not in (None, "parquet"):
        raise CasaError(f"--to {to!r} is not supported; use --to parquet or leave it out")
    cat = get_catalog(catalog)
    spec = cat.get(dataset)
    convert = to == "parquet" and spec.format == "root"
    if to == "parquet" and spec.format == "rntuple":
        raise CasaError(f"dataset {dataset!r} is RNTuple; only TTrees convert to Parquet for now")
    s3 = path or get_path("s3")
    if not isinstance(s3, S3Path):
        raise CasaError("ingest writes to S3 only: dest must be s3://bucket/prefix")
    bucket, prefix = split_s3_url(dest)
    endpoint, secrets = s3.endpoint(dest), s3._secrets(dest)
    client = s3.client(dest)
    s3.check(f"s3://{bucket}")  # missing bucket / bad credentials / endpoint down: fail before work
    files = resolve(spec)
    names = _rel_names([f.lfn for f in files])
    fmt = "parquet" if convert else spec.format
    target = name or (f"{dataset}-parquet" if convert else dataset)
    result = IngestResult(target, dest, fmt, None)

    bar = _progress(progress)
    with bar:
        tmpdir = Path(get_config().data_path) / "ingest-tmp"
        for f, rel in zip(files, names):
            cand = _readable(f.candidates, f.lfn)
            nevents = f.nevents
            meta: dict[str, str] = {"casa-lfn": f.lfn[:1000]}
            url = f"s3://{bucket}/{prefix.strip('/') + '/' if prefix.strip('/') else ''}{rel}"
            if convert:
                rel = os.path.splitext(rel)[0] + ".parquet"
                url = os.path.splitext(url)[0] + ".parquet"
                meta["casa-source"] = cand.url[:1000]
                meta["casa-row-group-events"] = str(row_group_events or "auto")
                if cand.via == "local":
                    meta["casa-source-sha256"] = _sha256_file(cand.path.reader_url(cand.url))
                    done = _converted_already(client, url, meta, endpoint, secrets)
                    if done is not None:  # this source, converted the same way, is there: no work
                        bar.add_task(rel + " (already there)", total=1, completed=1)
                        done.lfn, done.lfn_is_replica = f.lfn, False
                        result.files.append(done)
                        continue
                tmpdir.mkdir(parents=True, exist_ok=True)
                local = tmpdir / (hashlib.sha256(f"{cand.url}|{row_group_events}".encode()).hexdigest()[:24] + ".parquet")
                if local.exists():  # kept from an interrupted run, so a resumed upload sees the same bytes
                    import pyarrow.parquet as pq

                    nevents = pq.ParquetFile(local).metadata.num_rows
                else:
                    part = local.with_suffix(".tmp")
                    nevents = convert_to_parquet(cand, spec.tree, part, row_group_events)
                    part.replace(local)
                meta["casa-nevents"] = str(nevents)
            elif cand.via == "local":
                local = Path(cand.path.reader_url(cand.url))
            else:  # a remote source: stage it locally first (checksums need the bytes anyway)
                tmpdir.mkdir(parents=True, exist_ok=True)
                local = tmpdir / hashlib.sha256(cand.url.encode()).hexdigest()[:24]
                cand.path.filesystem(cand.url).get(cand.url, str(local))
            task = bar.add_task(rel, total=os.path.getsize(local))
            fr = upload_file(client, local, url, part_size=part_size, metadata=meta, endpoint=endpoint,
                             secrets=secrets, progress=lambda n, t=task: bar.advance(t, n), on_part=on_part)
            if verify and fr.status != "skipped":
                verify_object(s3, url, fr.sha256, fr.size)
            fr.lfn, fr.nevents = f.lfn, nevents
            fr.lfn_is_replica = any(c.url == f.lfn for c in f.candidates)
            result.files.append(fr)
            if convert or cand.via != "local":
                local.unlink(missing_ok=True)
    result.catalog_file = record(cat, spec, result, catalog_out=catalog_out)
    return result


def _converted_already(client, url: str, meta: dict[str, str], endpoint: str, secrets: list[str]) -> FileResult | None:
    """The object at ``url`` if it was converted from the same source bytes with the same settings."""
    bucket, key = split_s3_url(url)
    with s3_errors(url, endpoint, secrets):
        try:
            head = client.head_object(Bucket=bucket, Key=key)
        except client.exceptions.ClientError as err:
            if str(err.response.get("Error", {}).get("Code")) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
    have = head.get("Metadata", {})
    keys = ("casa-source-sha256", "casa-row-group-events")
    if any(have.get(k) != meta.get(k) for k in keys) or "casa-sha256" not in have:
        return None
    nevents = int(have["casa-nevents"]) if have.get("casa-nevents", "").isdigit() else None
    return FileResult(lfn="", url=url, size=int(head["ContentLength"]), sha256=have["casa-sha256"],
                      nevents=nevents, status="skipped")


def _progress(enabled: bool):
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                    TimeRemainingColumn(), disable=not enabled, transient=False)


# -- catalog -----------------------------------------------------------------------------------
def _yaml():
    from ruamel.yaml import YAML

    y = YAML()
    y.preserve_quotes = True
    y.width = 120
    return y


def _writable(p: Path) -> bool:
    return BUILTIN not in p.parents and p.parent != BUILTIN and os.access(p, os.W_OK)


def record(cat, spec: DatasetSpec, result: IngestResult, catalog_out: str | Path | None = None) -> Path:
    """Write ``result``'s replicas into the catalog; returns the file written."""
    same = result.dataset == spec.name
    origin = cat.origin(spec.name)
    if same:
        if not _writable(origin):
            raise CatalogError(f"dataset {spec.name!r} is defined in {origin}, which casa does not edit; "
                               "pass --as NAME to record the copy as a new dataset")
        out = origin
    elif result.dataset in cat:
        out = cat.origin(result.dataset)
        if not _writable(out):
            raise CatalogError(f"dataset {result.dataset!r} is defined in read-only {out}; pass another --as NAME")
    else:
        out = Path(catalog_out) if catalog_out else (origin if _writable(origin) else user_config_dir() / "catalogs" / "ingested.yaml")
    y = _yaml()
    doc = y.load(out.read_text()) if out.exists() else None
    if doc is None:
        doc = {"datasets": []}
    doc.setdefault("datasets", [])
    entry = next((d for d in doc["datasets"] if d.get("name") == result.dataset), None)
    if entry is None:
        entry = {"name": result.dataset,
                 "description": f"{spec.description or spec.name} (copy in {result.dest})",
                 "tree": spec.tree, "format": result.format,
                 "metadata": {**spec.metadata, "ingested_from": spec.name}, "files": []}
        doc["datasets"].append(entry)
    files = entry.setdefault("files", [])
    in_place = same or result.dataset in cat
    if in_place and any(e.get("glob") if isinstance(e, dict) else set("*?[") & set(e) for e in files):
        raise CatalogError(f"dataset {result.dataset!r} in {out} lists files by glob, which cannot carry "
                           "replicas; pass --as NAME to record the copy as a new dataset")
    for k, fr in enumerate(result.files):
        lfn = fr.lfn if result.format == spec.format else fr.url
        if same:  # the YAML entries are the spec's files, in order (relative paths as written)
            i = k
        else:
            i = next((j for j, e in enumerate(files) if (e if isinstance(e, str) else e.get("lfn")) == lfn), None)
            if i is None:
                files.append({"lfn": lfn})
                i = len(files) - 1
        if isinstance(files[i], str):
            files[i] = {"lfn": files[i]}
        e = files[i]
        if fr.nevents is not None:
            e["nevents"] = fr.nevents
        if "size" not in e:
            e["size"] = fr.size
        if "replicas" not in e and fr.lfn_is_replica and result.format == spec.format:
            e["replicas"] = [e["lfn"]]  # listing replicas stops the LFN being read as a path: keep it
        if e["lfn"] == fr.url:  # a converted file: its LFN is its URL, no replica list needed
            continue
        reps = e.setdefault("replicas", [])
        if fr.url not in [r if isinstance(r, str) else r.get("url") for r in reps]:
            reps.append(fr.url)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=out.parent, delete=False, suffix=".tmp") as tmp:
        y.dump(doc, tmp)
    os.replace(tmp.name, out)
    return out
