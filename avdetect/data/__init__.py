"""Datasets: the data contract on disk (codec, features, cache_entry, metadata), the build
machinery and command (builder, clips, build), and the Grain input pipelines (pipeline,
windows). Import names from the module that defines them; this package re-exports nothing,
so preprocessing worker processes, which only need :mod:`avdetect.data.clips`, never pay
for importing Grain.
"""
