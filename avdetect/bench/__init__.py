"""Benchmarks that print figures (speed targets live here, never in timed tests).

* ``python -m avdetect.bench.model_bench`` - parameters, FLOPs per 1-second clip and
  train-step time per method and config; ``--peer`` at the reference student's shapes.
* ``python -m avdetect.bench.peer_bench`` - our student against the torch reference
  student (``torch_ref``) in the same run: speed and memory ratios.
* ``python -m avdetect.bench.step_profile`` - where the train step's CPU time goes (ours,
  the torch reference, single ops).
* ``python -m avdetect.bench.data_bench`` - dataset build and loader throughput.
"""
