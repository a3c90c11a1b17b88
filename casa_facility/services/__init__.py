"""Launchers for the real services casa talks to (XRootD/XCache, S3, ServiceX, Skyhook).

Used by the tests, the benchmarks and ``casa facility``. Each launcher is a :class:`Service`
subclass in its own module; they bind 127.0.0.1 only.
"""

from casa_facility.services.base import Service, free_port, wait_for_port

__all__ = ["Service", "free_port", "wait_for_port"]
