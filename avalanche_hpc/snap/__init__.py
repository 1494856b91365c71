"""The optional SNAP stage: Sentinel-1 GRD products -> terrain-corrected sigma0 GeoTIFFs in ``scenes/``.

Modules: ``products`` (product-name parsing, relative orbit), ``gpt`` (gpt command lines),
``staging`` (orbit files and DEM staged for offline compute nodes, verified before gpt starts),
``stage`` (one task per GRD product, outputs placed per the study contract).
"""
