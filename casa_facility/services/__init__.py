"""Launchers for the real services casa talks to (XRootD/XCache, S3, Ceph, ServiceX, Skyhook, Slurm).

Used by the tests, the benchmarks and ``casa facility``. Each launcher is a :class:`Service`
subclass in its own module, a declarative list of :class:`Daemon` parts; they bind 127.0.0.1 only.
"""

from casa_facility.services.base import Daemon, Service, free_port, wait_for_port

__all__ = ["Daemon", "Service", "free_port", "wait_for_port"]
