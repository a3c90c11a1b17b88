"""ServiceX delivery: casa's compatible endpoint and the guarded client around ``servicex.deliver``.

``casa_data.open(name, query=...)`` (or ``via="servicex"``) goes through the registered
``servicex`` delivery path (:mod:`casa_data.paths.servicex`) to :func:`.client.deliver_query`;
:func:`open_query` builds the Dataset over the outputs. The endpoint is
:mod:`casa_facility.servicex.app` (launcher: :class:`casa_facility.services.servicex.ServiceXEndpoint`).
"""

from __future__ import annotations

__all__ = ["open_query", "deliver_query"]


def __getattr__(name: str):
    if name == "deliver_query":  # lazy: importing servicex costs ~2 s
        from .client import deliver_query

        return deliver_query
    if name == "open_query":
        from ..dataset import open_query

        return open_query
    raise AttributeError(name)
