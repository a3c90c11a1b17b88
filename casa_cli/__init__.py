"""The ``casa`` command line, in one place: a thin layer of typer sub-apps over the libraries.

``casa data`` (:mod:`.data`), ``casa run`` (:mod:`.run`), ``casa bench`` (:mod:`.bench`),
``casa facility`` (:mod:`.facility`), ``casa compute`` (:mod:`.compute`), ``casa demo``.
"""
