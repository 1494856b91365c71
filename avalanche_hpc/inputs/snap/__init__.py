"""The optional SNAP step: Sentinel-1 GRD products -> terrain-corrected sigma0 GeoTIFFs in ``scenes/``.

Modules: ``gpt`` (gpt command lines), ``auxdata`` (orbit files, geoid and DEM fetched for offline
compute nodes, verified before gpt starts), ``tasks`` (one task per GRD product, outputs placed
per the study contract). Product-name parsing lives in ``avalanche_hpc.inputs.products``.
"""
