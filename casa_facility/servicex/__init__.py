"""casa's ServiceX-compatible endpoint: REST app, scheduler, SQLite state and per-file transforms.

The client around the unmodified ``servicex`` package and the query translation both sides use
live in :mod:`casa_data.servicex`.
"""
