"""casa_facility: the services a facility runs, and the facility in a box.

Not needed to use casa: the client SDK (``casa_data``, ``casa_compute``) talks to these services
over the network. Installed with ``pip install 'casa-sdk[facility]'``.

* :mod:`.services` -- launchers (XRootD origin + XCache, S3, Ceph RGW, ServiceX, Skyhook, SLURM, PKI)
* :mod:`.skyhook` -- the Skyhook Arrow Flight server
* :mod:`.servicex` -- the ServiceX-compatible endpoint
* :mod:`.gateway`, :mod:`.gateway_auth` -- Dask Gateway on SLURM with the facility's WLCG tokens
* :mod:`.lifecycle`, :mod:`.supervisor` -- ``casa facility up|status|down``
* :mod:`.demo` -- ``casa demo``
"""

from __future__ import annotations

from casa_data.extras import require_extra

require_extra("facility", "casa_facility", ["fastapi", "uvicorn"])
