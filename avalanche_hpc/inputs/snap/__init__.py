"""The optional SNAP stage: Sentinel-1 GRD products -> terrain-corrected sigma0 GeoTIFFs in ``scenes/``.

Modules: ``gpt`` (gpt command lines), ``auxdata`` (orbit files and DEM staged for offline
compute nodes, verified before gpt starts), ``tasks`` (one task per GRD product, outputs placed
per the study contract). Product-name parsing lives in ``avalanche_hpc.inputs.products``.
"""
