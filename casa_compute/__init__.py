"""casa_compute: run coffea processors over what casa_data delivers, on Dask clusters.

May import casa_data; casa_data never imports casa_compute.
"""

__version__ = "0.1.0"
