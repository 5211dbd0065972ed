"""avdetect: audio-visual deepfake detection in JAX/Flax.

Two reference methods are reimplemented here (see README.md and METHODS.md):
explicit correlation learning / correlation distillation (Yu et al., ICME 2024) and
CAD, cross-modal alignment and distillation (Du et al., 2025).
"""

__version__ = "0.1.0"
