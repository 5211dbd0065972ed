"""The `realav` dataset: the 16 real and generated talking-face fixture clips."""
