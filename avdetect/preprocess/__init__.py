"""Preprocessing: face tracking and crops, log-mel features, and the per-video pipeline
that turns any talking-face video into the model's inputs (the data contract)."""
