"""Benchmarks that print figures (speed targets live here, never in timed tests).

* ``python -m avdetect.bench.model_bench`` - parameters, FLOPs per 1-second clip and
  train-step time per method and config; ``--peer`` compares with the peer PyTorch
  baseline (../shared/research/peer_baseline.md).
* ``python -m avdetect.bench.data_bench`` - dataset build and loader throughput.
"""
