"""Padding changes no valid frame: the same clip scored as an n-frame window and as the
first n frames of a longer window (the rest padding, ``frame_mask`` 0) gives the same
valid-frame scores, for the tiny corrdistill, baseline and CAD (random stand-in encoders)
students, with the padded frames filled with random garbage (so any leak shows), and for
the '3d' mouth stem; plus each masked building block against its unpadded run."""

from __future__ import annotations

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from avdetect.data.random_batches import RandomBatches
from avdetect.methods import build_method
from avdetect.models import audio as audio_lib
from avdetect.models import layers, visual

N, T = 10, 16            # valid frames, padded window


def _pad_garbage(batch: dict, n: int, t: int, rng: np.random.Generator) -> dict:
    """Every [B, k*n, ...] stream extended to k*t steps with random values of its dtype;
    frame_mask marks the first n frames."""
    out = {}
    for key, x in batch.items():
        x = np.asarray(x)
        if key == "frame_mask" or x.ndim < 2 or x.shape[1] % n:
            out[key] = x
            continue
        k = x.shape[1] // n
        shape = (x.shape[0], k * (t - n)) + x.shape[2:]
        if x.dtype == np.uint8:
            extra = rng.integers(0, 256, shape).astype(np.uint8)
        else:
            extra = (rng.normal(size=shape) * 5).astype(x.dtype)
        out[key] = np.concatenate([x, extra], axis=1)
    mask = np.zeros((x.shape[0], t), np.float32)
    mask[:, :n] = 1.0
    out["frame_mask"] = mask
    return out


def _config(method: str, arg: str):
    c = importlib.import_module(f"configs.{method}").get_config(arg)
    with c.unlocked():
        c.data.window, c.data.batch_size = N, 1
    return c


@pytest.mark.parametrize("method,arg", [
    ("corrdistill", "tiny"), ("baseline", "tiny"), ("cad", "tiny,encoders=random"),
])
def test_padded_window_scores_equal_the_unpadded_clip(method, arg):
    config = _config(method, arg)
    m = build_method(config)
    batch = next(RandomBatches(config, seed=0, process_index=0, local_batch_size=1))
    batch["frame_mask"] = np.ones((1, N), np.float32)
    variables = m.init(jax.random.PRNGKey(0), batch)
    # non-trivial BatchNorm statistics, so eval-mode BN is not the identity
    if "batch_stats" in variables:
        rng = np.random.default_rng(1)

        def draw(path, leaf):
            lo, hi = (0.5, 2.0) if path[-1].key == "var" else (-1.0, 1.0)
            return jnp.asarray(rng.uniform(lo, hi, leaf.shape), leaf.dtype)
        variables = {**variables, "batch_stats": jax.tree_util.tree_map_with_path(
            draw, variables["batch_stats"])}
    plain = m.predict(variables, batch)
    padded = m.predict(variables, _pad_garbage(batch, N, T, np.random.default_rng(2)))
    np.testing.assert_allclose(np.asarray(padded["frame_score"])[:, :N],
                               np.asarray(plain["frame_score"]), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(padded["score"], plain["score"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("stem", ["3d"])      # per_frame: in the tiny students above
def test_mouth_encoder_ignores_padded_frames(stem):
    enc = visual.MouthEncoder(stem_width=4, widths=(4, 8, 8, 8), blocks=1, stem=stem,
                              tcn_blocks=2, head_hidden=8, out_dim=8)
    rng = np.random.default_rng(0)
    clip = rng.integers(0, 256, (1, N, 32, 32)).astype(np.uint8)
    padded = np.concatenate([clip, rng.integers(0, 256, (1, T - N, 32, 32)).astype(np.uint8)], 1)
    mask = (np.arange(T) < N)[None].astype(np.float32)
    variables = enc.init(jax.random.PRNGKey(0), jnp.asarray(clip), False, jnp.ones((1, N)))
    a = enc.apply(variables, jnp.asarray(clip), False, jnp.ones((1, N)))
    b = enc.apply(variables, jnp.asarray(padded), False, jnp.asarray(mask))
    np.testing.assert_allclose(np.asarray(b)[:, :N], np.asarray(a), rtol=1e-5, atol=1e-5)
    # without the mask the padding does leak (the test can see a leak)
    c = enc.apply(variables, jnp.asarray(padded), False, None)
    assert np.abs(np.asarray(c)[:, :N] - np.asarray(a)).max() > 1e-4


@pytest.mark.parametrize("name", ["seresnet", "whisper_like"])
def test_audio_encoders_ignore_padded_frames(name):
    enc = (audio_lib.SEResNetAudio(layers=(1, 1, 1, 1), widths=(4, 8, 8, 8), reduction=2)
           if name == "seresnet" else audio_lib.WhisperLikeAudio(dim=16, depth=1, heads=2))
    rng = np.random.default_rng(0)
    clip = rng.normal(size=(1, 4 * N, 80)).astype(np.float32)
    padded = np.concatenate([clip, 9 * rng.normal(size=(1, 4 * (T - N), 80))], 1)
    mask = (np.arange(T) < N)[None].astype(np.float32)
    variables = enc.init(jax.random.PRNGKey(0), jnp.asarray(clip), False, jnp.ones((1, N)))
    a = enc.apply(variables, jnp.asarray(clip), False, jnp.ones((1, N)))
    b = enc.apply(variables, jnp.asarray(padded, jnp.float32), False, jnp.asarray(mask))
    np.testing.assert_allclose(np.asarray(b)[:, :N], np.asarray(a), rtol=1e-5, atol=1e-5)


def test_zero_padding_and_masked_squeeze_excite_against_numpy():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 8, 3, 4)).astype(np.float32)           # [N, 4T, F, C], T = 2
    mask = np.array([[1, 0], [1, 1]], np.float32)
    z = np.asarray(layers.zero_padding(jnp.asarray(x), jnp.asarray(mask)))
    want = x.copy()
    want[0, 4:] = 0
    np.testing.assert_array_equal(z, want)
    se = layers.SqueezeExcite(reduction=2)
    v = se.init(jax.random.PRNGKey(0), jnp.asarray(x))
    got = np.asarray(se.apply(v, jnp.asarray(x), jnp.asarray(mask)))
    # the excitation of clip 0 sees only its first 4 time steps
    ref0 = np.asarray(se.apply(v, jnp.asarray(x[:1, :4])))
    np.testing.assert_allclose(got[0, :4], ref0[0], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(got[1], np.asarray(se.apply(v, jnp.asarray(x[1:])))[0],
                               rtol=1e-6, atol=1e-6)
