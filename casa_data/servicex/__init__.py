"""ServiceX delivery: casa's compatible endpoint and the guarded client around ``servicex.deliver``.

``casa_data.open(name, query=...)`` lands in :func:`open_query`; the endpoint is
:mod:`casa_facility.servicex.app` (launcher: :class:`casa_facility.services.servicex.ServiceXEndpoint`).
"""

from __future__ import annotations

__all__ = ["open_query", "deliver_query"]


def __getattr__(name: str):
    if name in __all__:  # lazy: importing servicex costs ~2 s
        from . import client

        return getattr(client, name)
    raise AttributeError(name)
