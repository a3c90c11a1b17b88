"""A single-node Ceph RGW (mon + one BlueStore OSD + radosgw, no mgr) on 127.0.0.1, for benchmarks.

What facilities run as their object store. Debian packages (``apt-get install
--no-install-recommends ceph-mon ceph-osd radosgw ceph-common``, ~290 MB); boots in ~15 s; no
systemd, no cephadm: each daemon runs in the foreground in its own process group (the three
:class:`~casa_facility.services.base.Daemon` parts of one service, stopped in reverse order). Settings from
../shared/notes/object-stores-and-skyhook.md: auth ``none`` with ``ms_mon_client_mode = crc
secure`` (else radosgw cannot talk to the mon), pools of size 1, a file-backed BlueStore, and one
warm-up PUT (the first write creates the data pool and is slow).

>>> with CephRGW() as rgw:                          # doctest: +SKIP
...     rgw.create_bucket("data"); opts = rgw.path_options()
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import uuid
from pathlib import Path

from casa_data.errors import ServiceError
from casa_facility.services.base import LOOPBACK, Daemon, Part, Service, port_open
from casa_facility.services.s3 import S3Server

__all__ = ["CephRGW"]

_OSD_PORTS = 24  # the OSD's messengers need 8; the rest is room for a port taken meanwhile


def _ephemeral_ports() -> tuple[int, int]:
    """The kernel's range of source ports for outgoing connections (Linux default 32768-60999)."""
    try:
        lo, hi = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(lo), int(hi)
    except (OSError, ValueError):
        return 32768, 60999


def _bindable(port: int) -> bool:
    """True if nothing listens on ``port`` and no connection uses it as its local port."""
    import socket

    with socket.socket() as s:
        try:
            s.bind((LOOPBACK, port))
        except OSError:
            return False
    return not port_open(port)


def _free_range(n: int) -> int:
    """The first port of ``n`` consecutive free ports, outside the kernel's ephemeral range.

    The OSD binds its messengers (public, cluster, two heartbeats; v1 and v2 each) only when
    the mon is up; a range inside the ephemeral range can meanwhile be taken by any outgoing
    connection on the machine (CI saw "bind unable to bind ... on any port in range").
    """
    import random

    lo, hi = _ephemeral_ports()
    spans = [(a, b) for a, b in ((10000, lo), (hi + 1, 65535)) if b - a > n]
    for _ in range(200):
        a, b = random.choice(spans or [(10000, 65535)])
        base = random.randrange(a, b - n)
        if all(_bindable(p) for p in range(base, base + n)):
            return base
    raise ServiceError(f"no {n} consecutive free ports on {LOOPBACK} outside {lo}-{hi}")


class CephRGW(S3Server, Service):
    """mon + OSD + radosgw. ``start()`` bootstraps the cluster, ``stop()`` ends all three."""

    name = "ceph-rgw"
    binary = "radosgw"
    binaries = ("ceph-mon", "ceph-osd", "monmaptool", "ceph-authtool", "ceph", "radosgw-admin")
    install_hint = "apt-get install --no-install-recommends ceph-mon ceph-osd radosgw ceph-common"
    startup_timeout = 120.0
    osd_size_gb = 12
    client_read_timeout = 30  # RGW's first requests create pools

    def __init__(self, workdir: str | os.PathLike | None = None, *, access_key: str | None = None,
                 secret_key: str | None = None):
        super().__init__(workdir)
        self.access_key = access_key or "casa" + secrets.token_hex(6)
        self._secret_key = secret_key or secrets.token_urlsafe(24)
        self.port = 0
        self._mon1 = self._mon2 = 0
        self._fsid = self._osd_id = ""
        self._user = False

    @property
    def secret_key(self) -> str:
        return self._secret_key

    @property
    def endpoint_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def conf(self) -> Path:
        return self.workdir / "ceph.conf"

    # -- Service hooks: mon, then the OSD, then radosgw (ready: a user and a warm-up PUT) -----------
    def env(self) -> dict[str, str]:
        return {**os.environ, "CEPH_CONF": str(self.conf)}

    def daemons(self) -> list[Part]:
        conf = ["-c", str(self.conf)]
        mon = Daemon("mon", ["ceph-mon", "-i", "a", "-f", *conf], setup=self._mkfs_mon, timeout=60, poll=0.3,
                     ready=lambda: self._run(["ceph", "-s", "--connect-timeout", "3"], check=False).returncode == 0,
                     log=self.workdir / "mon.out", logs=[self.workdir / "log" / "ceph-mon.a.log"])
        osd = Daemon("osd", lambda: ["ceph-osd", "-i", self._osd_id, "-f", *conf], setup=self._mkfs_osd,
                     ready=self._osd_up, timeout=60, poll=0.3, log=self.workdir / "osd.out")
        rgw = Daemon("radosgw", ["radosgw", "-n", "client.rgw.x", "-f", *conf], ready=self.is_ready,
                     log=self.log_path)
        return [mon, osd, rgw]

    def is_ready(self) -> bool:
        if not port_open(self.port):
            return False
        if not self._user:
            self._run(["radosgw-admin", "user", "create", "--uid=casa", "--display-name=casa",
                       f"--access-key={self.access_key}", f"--secret-key={self._secret_key}"], quiet=True)
            self._user = True
        c = self.client()
        try:
            c.create_bucket(Bucket="casa-ready")
        except (c.exceptions.BucketAlreadyOwnedByYou, c.exceptions.BucketAlreadyExists):
            pass
        c.put_object(Bucket="casa-ready", Key="probe", Body=b"ok")  # warm-up: creates the data pool
        return True

    def prepare(self) -> None:
        self._user = False
        base = _free_range(3 + _OSD_PORTS)
        self._mon2, self._mon1, self.port = base, base + 1, base + 2
        mon2, mon1 = self._mon2, self._mon1
        d = self.workdir
        for sub in ("mon", "osd", "run", "log", "crash", "rgw"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        self._fsid = str(uuid.uuid4())
        self.conf.write_text(f"""[global]
fsid = {self._fsid}
mon_host = [v2:{LOOPBACK}:{mon2},v1:{LOOPBACK}:{mon1}]
public_addr = {LOOPBACK}
cluster_addr = {LOOPBACK}
ms_bind_ipv4 = true
ms_bind_ipv6 = false
ms_bind_port_min = {base + 3}
ms_bind_port_max = {base + 2 + _OSD_PORTS}
auth_cluster_required = none
auth_service_required = none
auth_client_required = none
ms_mon_client_mode = crc secure
osd_pool_default_size = 1
osd_pool_default_min_size = 1
osd_pool_default_pg_num = 8
osd_pool_default_pgp_num = 8
osd_pool_default_pg_autoscale_mode = off
mon_allow_pool_size_one = true
osd_crush_chooseleaf_type = 0
mon_max_pg_per_osd = 1000
run_dir = {d}/run
admin_socket = {d}/run/$cluster-$name.asok
log_file = {d}/log/$cluster-$name.log
crash_dir = {d}/crash
keyring = {d}/keyring
mon_data = {d}/mon/$cluster-$id
osd_data = {d}/osd/$cluster-$id
[mon]
mon_initial_members = a
[osd]
osd_objectstore = bluestore
bluestore_block_path = {d}/osd/$cluster-$id/block.file
bluestore_block_size = {self.osd_size_gb << 30}
bluestore_block_create = true
bluestore_cache_size = 268435456
osd_memory_target = 1073741824
bluestore_fsck_on_mkfs = false
[client.rgw.x]
rgw_frontends = beast endpoint={LOOPBACK}:{self.port}
rgw_dns_name = localhost
rgw_data = {d}/rgw
""")

    def _mkfs_mon(self) -> None:
        d = self.workdir
        keyring, monmap = d / "keyring", d / "monmap"
        self._run(["ceph-authtool", "--create-keyring", str(keyring), "--gen-key", "-n", "mon.",
                   "--cap", "mon", "allow *"])
        self._run(["monmaptool", "--create", "--addv", "a",
                   f"[v2:{LOOPBACK}:{self._mon2},v1:{LOOPBACK}:{self._mon1}]", "--fsid", self._fsid, str(monmap)])
        self._run(["ceph-mon", "--mkfs", "-i", "a", "--monmap", str(monmap), "--keyring", str(keyring)])

    def _mkfs_osd(self) -> None:
        osd_uuid = str(uuid.uuid4())
        self._osd_id = self._run(["ceph", "osd", "new", osd_uuid]).stdout.strip()
        (self.workdir / "osd" / f"ceph-{self._osd_id}").mkdir(parents=True, exist_ok=True)
        self._run(["ceph-osd", "-i", self._osd_id, "--mkfs", "--osd-uuid", osd_uuid])

    def _osd_up(self) -> bool:
        out = self._run(["ceph", "osd", "stat", "-f", "json"], check=False)
        return out.returncode == 0 and json.loads(out.stdout or "{}").get("num_up_osds", 0) >= 1

    def _run(self, argv: list[str], check: bool = True, quiet: bool = False) -> subprocess.CompletedProcess[str]:
        if argv[0] in ("ceph", "ceph-mon", "ceph-osd", "radosgw-admin"):
            argv = argv + ["-c", str(self.conf)]
        out = subprocess.run(argv, capture_output=True, text=True, env=self.env(), cwd=self.workdir, timeout=60)
        if check and out.returncode != 0:
            shown = " ".join(a if self._secret_key not in a else "--secret-key=***" for a in argv)
            raise ServiceError(f"{self.name}: `{shown}` failed ({out.returncode}): {out.stderr.strip()[-800:]}")
        return out

    def after_stop(self) -> None:
        self._client = None
        if self._own_workdir:  # the 12 GB sparse block file: drop the data, keep the logs
            shutil.rmtree(self.workdir / "osd", ignore_errors=True)
            shutil.rmtree(self.workdir / "mon", ignore_errors=True)
