"""layers.conv_chunked_wgrad (kernel gradient summed over chunks of frames) against
jax.lax.conv_general_dilated and JAX's own derivative of it, and the student's visual
front end with it against the same module on plain convolutions."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from avdetect.models.layers import conv_chunked_wgrad
from tree_compare import assert_gradients_close


def _rand(shape, seed):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


@pytest.mark.parametrize("layout,xshape,wshape,strides,padding,chunk", [
    (("NHWC", "HWIO", "NHWC"), (11, 9, 9, 6), (3, 3, 6, 5), (1, 1), ((1, 1), (1, 1)), 4),
    (("NHWC", "HWIO", "NHWC"), (10, 12, 12, 1), (7, 7, 1, 4), (2, 2), ((3, 3), (3, 3)), 5),
    (("NHWC", "HWIO", "NHWC"), (7, 8, 8, 3), (1, 1, 3, 4), (2, 2), "SAME", 25),
    (("NCHW", "OIHW", "NCHW"), (9, 4, 8, 8), (6, 4, 3, 3), (1, 1), ((1, 1), (1, 1)), 2),
])
def test_values_and_gradients_equal_plain_convolution(layout, xshape, wshape, strides,
                                                      padding, chunk):
    x, w = _rand(xshape, 0), _rand(wshape, 1)
    plain = functools.partial(jax.lax.conv_general_dilated, window_strides=strides,
                              padding=padding, dimension_numbers=layout)
    chunked = functools.partial(conv_chunked_wgrad, window_strides=strides, padding=padding,
                                dimension_numbers=layout, chunk=chunk)
    y_plain, vjp_plain = jax.vjp(lambda a, b: plain(a, b), x, w)
    y_chunk, vjp_chunk = jax.vjp(lambda a, b: chunked(a, b), x, w)
    np.testing.assert_array_equal(y_chunk, y_plain)
    g = _rand(y_plain.shape, 2)
    for got, want in zip(vjp_chunk(g), vjp_plain(g)):   # float32 sums of up to ~10^3 terms
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6 * float(np.abs(want).max()))


def test_visual_front_end_loss_and_gradients_unchanged(monkeypatch):
    """The student's visual front end (stem + ResNet trunk, where the chunked kernel
    gradient is used), small widths, in training mode: outputs, batch-stat updates and
    every gradient equal those of the same module on lax.conv_general_dilated."""
    from avdetect.models import visual

    front = visual.MouthFrontend(stem_width=8, widths=(8, 16, 16, 32))
    x = _rand((2, 16, 32, 32), 3)                  # 32 frames: two chunks of frames
    assert 2 * 16 > visual.WGRAD_CHUNK
    variables = front.init(jax.random.key(0), x, True)
    r = _rand((2, 16, 32), 4)

    def run():
        def loss_fn(p):
            out, upd = front.apply({"params": p, "batch_stats": variables["batch_stats"]},
                                   x, True, mutable=["batch_stats"])
            return jnp.sum(out * r), upd
        return jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(variables["params"])

    (loss, stats), grads = run()
    monkeypatch.setattr(visual, "_frame_conv", jax.lax.conv_general_dilated)
    (loss_ref, stats_ref), grads_ref = run()
    np.testing.assert_allclose(loss, loss_ref, rtol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
                 stats, stats_ref)
    assert_gradients_close(grads, grads_ref, rtol=1e-4, atol_scale=1e-5)
