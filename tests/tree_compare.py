"""One comparison of two gradient trees, for the tests that check a rewritten layer
against the plain one it replaces."""

from __future__ import annotations

import jax
import numpy as np


def assert_gradients_close(grads, grads_ref, rtol: float, atol_scale: float) -> None:
    """Same leaf paths, and every leaf close to its reference: relative ``rtol`` plus an
    absolute slack of ``atol_scale`` times the reference leaf's largest magnitude."""
    flat, flat_ref = jax.tree.leaves_with_path(grads), jax.tree.leaves_with_path(grads_ref)
    assert [p for p, _ in flat] == [p for p, _ in flat_ref]
    for (path, g), (_, g_ref) in zip(flat, flat_ref):
        scale = max(float(np.abs(g_ref).max()), 1e-6)
        np.testing.assert_allclose(g, g_ref, rtol=rtol, atol=atol_scale * scale,
                                   err_msg=jax.tree_util.keystr(path))
