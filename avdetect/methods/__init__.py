"""Detection methods behind one interface (:class:`avdetect.methods.base.Method`).

``build_method(config)`` picks the method named by ``config.method``:
'corrdistill' (correlation distillation, Yu et al. 2024), 'cad' (cross-modal alignment and
distillation, Du et al. 2025) or 'baseline' (concatenation fusion, detection loss only).
"""

from __future__ import annotations

import importlib

import ml_collections

from avdetect.errors import ConfigError
from avdetect.methods.base import Method
from avdetect.methods.baseline import Baseline
from avdetect.methods.cad import CAD
from avdetect.methods.corrdistill import CorrDistill

METHODS = {"corrdistill": CorrDistill, "cad": CAD, "baseline": Baseline}


def build_method(config: ml_collections.ConfigDict) -> Method:
    """The method of ``config.method``, built from ``config.model`` / ``config.loss``: a
    registry name (:data:`METHODS`) or ``'module:factory'`` (a method defined elsewhere,
    e.g. the tests' toy method)."""
    name = config.get("method")
    if isinstance(name, str) and ":" in name:
        module, attr = name.split(":", 1)
        return getattr(importlib.import_module(module), attr)(config)
    if name not in METHODS:
        raise ConfigError(f"config.method={name!r}: expected one of {sorted(METHODS)}")
    return METHODS[name](config)


__all__ = ["METHODS", "build_method"]
