"""The Skyhook Arrow Flight server (``python -m casa_facility.skyhook.server``) and its token check.

The client and the request both sides validate live in :mod:`casa_data.skyhook`.
"""
