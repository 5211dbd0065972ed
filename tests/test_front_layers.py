"""The visual front end's lean training layers against the plain flax / lax ones they
replace: layers.max_pool_indexed against nn.max_pool (values and gradient, ties
included) and layers.BatchNormReLU against relu(flax BatchNorm) (variables, outputs,
running averages, gradients), with and without the max-pool it can end with (the stem's),
then the whole front end with all of them swapped back."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from avdetect.models import layers, visual
from tree_compare import assert_gradients_close


def _flax_pool(x, window=3, stride=2, pad=1):
    return nn.max_pool(x, (window,) * 2, (stride,) * 2, padding=((pad, pad),) * 2)


def _tied(shape, seed):
    """ReLU-like maps on a coarse grid: most windows hold ties (zeros, repeated values)."""
    x = np.random.default_rng(seed).normal(size=shape)
    return jnp.asarray(np.maximum(np.round(x * 2) / 2, 0.0), jnp.float32)


@pytest.mark.parametrize("shape,window,stride,pad", [
    ((3, 56, 56, 4), 3, 2, 1), ((2, 44, 44, 3), 3, 2, 1), ((1, 7, 9, 2), 3, 2, 1),
    ((2, 10, 12, 3), 2, 2, 0), ((2, 9, 9, 2), 3, 1, 1)])
@pytest.mark.parametrize("ties", [False, True])
def test_indexed_max_pool_equals_flax_max_pool_values_and_gradient(shape, window, stride,
                                                                    pad, ties):
    x = _tied(shape, 0) if ties else jax.random.normal(jax.random.key(0), shape)
    ours = lambda z: layers.max_pool_indexed(z, window, stride, pad)  # noqa: E731
    ref = lambda z: _flax_pool(z, window, stride, pad)                 # noqa: E731
    np.testing.assert_array_equal(ours(x), ref(x))
    w = jax.random.normal(jax.random.key(1), ref(x).shape)
    g_ours = jax.jit(jax.grad(lambda z: jnp.sum(ours(z) * w)))(x)
    g_ref = jax.jit(jax.grad(lambda z: jnp.sum(ref(z) * w)))(x)
    if ties:    # where windows tie, the whole gradient goes to one input in both
        assert float(jnp.sum(g_ref != 0)) < 0.9 * g_ref.size
    np.testing.assert_allclose(g_ours, g_ref, rtol=1e-6, atol=1e-6)


def test_indexed_max_pool_refuses_a_window_beyond_its_uint8_index():
    with pytest.raises(ValueError, match="uint8"):
        layers.max_pool_indexed(jnp.zeros((1, 20, 20, 1)), 17, 1, 0)


class _PlainBNReLU(nn.Module):
    """What BatchNormReLU replaces: relu(torch_bn(...)), the flax BatchNorm, then
    nn.max_pool when ``pool`` = (window, stride, pad) is given."""
    train: bool
    momentum: float = 0.1
    eps: float = 1e-5
    pool: tuple | None = None

    @nn.compact
    def __call__(self, x):
        y = nn.relu(layers.torch_bn(self.train, self.momentum, self.eps, name="bn")(x))
        return y if self.pool is None else _flax_pool(y, *self.pool)


def _bn_pair(x, momentum, eps, pool=None):
    ours = layers.BatchNormReLU(True, momentum, eps, pool=pool)
    plain = _PlainBNReLU(True, momentum, eps, pool=pool)
    v_ours = ours.init(jax.random.key(0), x)
    v_plain = plain.init(jax.random.key(0), x)
    return ours, plain, v_ours, v_plain


@pytest.mark.parametrize("shape,momentum,eps,pool", [((6, 9, 9, 5), 0.01, 1e-3, None),
                                                     ((40, 7), 0.1, 1e-5, None),
                                                     ((6, 12, 12, 5), 0.01, 1e-3, (3, 2, 1)),
                                                     ((4, 9, 11, 3), 0.1, 1e-5, (3, 2, 1))])
def test_batchnorm_relu_equals_flax_batchnorm_then_relu(shape, momentum, eps, pool):
    x = 3.0 + 2.0 * jax.random.normal(jax.random.key(2), shape)
    ours, plain, v_ours, v_plain = _bn_pair(x, momentum, eps, pool)
    # same variables: names, shapes, initial values
    unwrapped = {c: v_plain[c]["bn"] for c in ("params", "batch_stats")}
    assert jax.tree.map(np.shape, v_ours) == jax.tree.map(np.shape, unwrapped)
    jax.tree.map(np.testing.assert_array_equal, v_ours, unwrapped)
    rng = np.random.default_rng(3)
    params = {"scale": jnp.asarray(rng.uniform(0.5, 1.5, shape[-1]), jnp.float32),
              "bias": jnp.asarray(rng.normal(0, 0.5, shape[-1]), jnp.float32)}
    stats = {"mean": jnp.asarray(rng.normal(size=shape[-1]), jnp.float32),
             "var": jnp.asarray(rng.uniform(0.5, 2, shape[-1]), jnp.float32)}
    out_shape = jax.eval_shape(lambda z: _PlainBNReLU(False, pool=pool).apply(v_plain, z), x).shape
    r = jax.random.normal(jax.random.key(4), out_shape)

    def run(module, wrap):
        def loss(x, p):
            out, upd = module.apply({"params": wrap(p), "batch_stats": wrap(stats)}, x,
                                    mutable=["batch_stats"])
            return jnp.sum(out * r), (out, upd)
        return jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))(x, params)

    (l_o, (y_o, upd_o)), (dx_o, dp_o) = run(ours, lambda t: t)
    (l_p, (y_p, upd_p)), (dx_p, dp_p) = run(plain, lambda t: {"bn": t})
    np.testing.assert_allclose(y_o, y_p, rtol=1e-6, atol=1e-6)
    for k in ("mean", "var"):      # the running averages move the same way
        np.testing.assert_allclose(upd_o["batch_stats"][k], upd_p["batch_stats"]["bn"][k],
                                   rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(dx_o, dx_p, rtol=1e-4, atol=1e-5 * float(jnp.abs(dx_p).max()))
    for k in ("scale", "bias"):
        np.testing.assert_allclose(dp_o[k], dp_p[k], rtol=1e-4,
                                   atol=1e-5 * float(jnp.abs(dp_p[k]).max()))
    # evaluation mode reads the running averages, bit for bit as flax does
    ev_o = layers.BatchNormReLU(False, momentum, eps, pool=pool).apply(
        {"params": params, "batch_stats": stats}, x)
    ev_p = _PlainBNReLU(False, momentum, eps, pool=pool).apply(
        {"params": {"bn": params}, "batch_stats": {"bn": stats}}, x)
    np.testing.assert_array_equal(ev_o, ev_p)


def test_front_end_with_the_lean_layers_trains_like_the_plain_one(monkeypatch):
    """The student's visual front end in training mode, small widths: the same variable
    tree, outputs, batch-stat updates and gradients as the same module built on flax's
    BatchNorm + relu and nn.max_pool."""
    front = visual.MouthFrontend(stem_width=8, widths=(8, 16, 16, 32))
    x = jax.random.normal(jax.random.key(5), (2, 6, 32, 32))
    r = jax.random.normal(jax.random.key(6), (2, 6, 32))

    def run():
        variables = front.init(jax.random.key(0), x, True)

        def loss_fn(p):
            out, upd = front.apply({"params": p, "batch_stats": variables["batch_stats"]},
                                   x, True, mutable=["batch_stats"])
            return jnp.sum(out * r), upd
        return variables, jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(
            variables["params"])

    v, ((loss, stats), grads) = run()
    def plain_bn_relu(train, momentum, eps, name, pool=None):   # flax's own layers, same scope
        def apply(y):
            y = nn.relu(layers.torch_bn(train, momentum, eps, name=name)(y))
            return y if pool is None else _flax_pool(y, *pool)
        return apply

    monkeypatch.setattr(visual, "BatchNormReLU", plain_bn_relu)
    v_ref, ((loss_ref, stats_ref), grads_ref) = run()
    assert jax.tree.map(np.shape, v) == jax.tree.map(np.shape, v_ref)
    jax.tree.map(np.testing.assert_array_equal, v, v_ref)       # same initial values
    np.testing.assert_allclose(loss, loss_ref, rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                 stats, stats_ref)
    assert_gradients_close(grads, grads_ref, rtol=1e-3, atol_scale=1e-4)


@pytest.mark.parametrize("b,t", [(1, 60), (2, 13)])     # chunks of 8 along T: last one padded
def test_eval_front_end_over_chunks_of_frames_equals_one_pass(monkeypatch, b, t):
    """Outside training the mouth encoder runs its per-frame front end over chunks of
    visual.EVAL_CHUNK frames (nn.scan): same variable tree as training, same outputs as
    one pass over all frames."""
    monkeypatch.setattr(visual, "EVAL_CHUNK", 8)
    enc = visual.MouthEncoder(stem_width=8, widths=(8, 16, 16, 32), tcn_blocks=1,
                              head_hidden=16, out_dim=8)
    mouth = jax.random.randint(jax.random.key(7), (b, t, 32, 32), 0, 256).astype(jnp.uint8)
    v_train = enc.init(jax.random.key(0), mouth, True)
    v_eval = enc.init(jax.random.key(0), mouth, False)
    assert jax.tree.map(np.shape, v_eval) == jax.tree.map(np.shape, v_train)
    jax.tree.map(np.testing.assert_array_equal, v_eval, v_train)
    # trained-looking running averages, so BatchNorm's eval path is not the identity
    stats = jax.tree.map(lambda a: a + 0.3 * jax.random.uniform(jax.random.key(8), a.shape),
                         v_train["batch_stats"])
    variables = {"params": v_train["params"], "batch_stats": stats}
    chunked = jax.jit(lambda m: enc.apply(variables, m, False))(mouth)
    monkeypatch.setattr(visual, "EVAL_CHUNK", 10_000)                  # one pass
    direct = jax.jit(lambda m: enc.apply(variables, m, False))(mouth)
    np.testing.assert_allclose(chunked, direct, rtol=1e-5, atol=1e-6)
