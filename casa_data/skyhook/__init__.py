"""Skyhook in casa: scans and histograms pushed next to the storage over Arrow Flight.

* :mod:`.server` -- the Flight service (``python -m casa_facility.skyhook.server``).
* :mod:`.client` -- :class:`SkyhookClient` and the pyarrow-Dataset-like :class:`SkyhookDataset`.
* :mod:`.protocol` -- the request both sides validate; filters travel as safe text.
* ``casa_data.paths.skyhook`` -- ``skyhook://`` URLs, ``via="skyhook"`` and the fsspec protocol.
* ``casa_facility.services.skyhook`` -- the launcher.
"""

from __future__ import annotations

from .client import SkyhookClient, SkyhookDataset, SkyhookUnavailable, parse_url
from .protocol import HistSpec, Request

__all__ = ["SkyhookClient", "SkyhookDataset", "SkyhookUnavailable", "HistSpec", "Request", "parse_url"]
