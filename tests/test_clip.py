"""CLIP ViT vision tower and the safetensors reader (avdetect.pretrained.clip /
safetensors_io), against transformers' CLIPVisionModel on tiny random configs, and the
``safetensors`` package's own reader. Figures print with ``-s``."""

from __future__ import annotations

import importlib.util
import json
import struct

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from avdetect.pretrained import clip as C
from avdetect.pretrained import safetensors_io
from avdetect.pretrained.errors import WeightFileError

PARITY_TOL = 1e-4            # the bar for CLIP vs transformers (float32)


def _need(module: str):
    """Import an optional reference package or skip, saying which and how to get it."""
    if importlib.util.find_spec(module.split(".")[0]) is None:
        pytest.skip(f"optional test dependency {module!r} is not installed "
                    "(pip install -r tests/requirements.txt)")
    return importlib.import_module(module)


_apply = jax.jit(lambda module, params, x: module.apply({"params": params}, x),
                 static_argnums=0)


def _tiny_clip(tmp_path, hidden_act: str = "quick_gelu", seed: int = 0):
    """A random CLIPVisionModelWithProjection (hidden 32, 2 layers, patch 4, image 32),
    every parameter randomised (fresh models have zero biases / unit LayerNorms), saved
    as safetensors. Returns the torch model."""
    torch, transformers = _need("torch"), _need("transformers")
    config = transformers.CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        image_size=32, patch_size=4, projection_dim=16, hidden_act=hidden_act)
    model = transformers.CLIPVisionModelWithProjection(config).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn(param.shape, generator=gen) * 0.2)
    model.save_pretrained(tmp_path, safe_serialization=True)
    return model


def _max_errors(out, ref) -> tuple[float, float]:
    err = float(np.max(np.abs(np.asarray(out) - ref)))
    return err, err / float(np.max(np.abs(ref)))


@pytest.mark.parametrize("hidden_act", ["quick_gelu", "gelu"])
def test_vision_tower_matches_transformers(tmp_path, hidden_act):
    torch = _need("torch")
    model = _tiny_clip(tmp_path, hidden_act)
    module, params = C.load_clip_vision(tmp_path)
    cfg = module.config
    assert (cfg.hidden_size, cfg.n_heads, cfg.n_layers, cfg.intermediate_size, cfg.image_size,
            cfg.patch_size, cfg.activation, cfg.projection_dim) == (32, 4, 2, 64, 32, 4,
                                                                     hidden_act, 16)
    pixels = np.random.default_rng(1).standard_normal((3, 3, 32, 32)).astype(np.float32)
    with torch.no_grad():
        ref = model.vision_model(pixel_values=torch.from_numpy(pixels))
        ref_proj = model(pixel_values=torch.from_numpy(pixels)).image_embeds.numpy()
    tower = C.ClipVisionTransformer(cfg)
    last, pooled = _apply(tower, params["vision"], jnp.asarray(pixels.transpose(0, 2, 3, 1)))
    assert last.shape == (3, 1 + 64, 32) and pooled.shape == (3, 32)
    figures = {}
    for name, out, want in [("last_hidden_state", last, ref.last_hidden_state.numpy()),
                            ("pooler_output", pooled, ref.pooler_output.numpy())]:
        figures[name] = _max_errors(out, want)
        assert figures[name][0] < PARITY_TOL, (name, figures[name])
    print(f"\nCLIP ({hidden_act}) vs transformers: " + ", ".join(
        f"{k} max abs {a:.2e} rel {r:.2e}" for k, (a, r) in figures.items()))
    # projected image embeddings (CLIPVisionModelWithProjection.image_embeds)
    proj = np.asarray(pooled) @ np.asarray(params["visual_projection"]["kernel"])
    assert np.abs(proj - ref_proj).max() < PARITY_TOL


def test_frame_encoder_normalises_uint8_and_resizes(tmp_path):
    """ClipVisionEncoder on uint8 face crops [B, T, S, S, 3] = transformers on CLIP-
    normalised pixels (PyTorch's antialiased bicubic resize when S != image_size)."""
    torch = _need("torch")
    model = _tiny_clip(tmp_path)
    module, params = C.load_clip_vision(tmp_path)
    rng = np.random.default_rng(2)
    mean, std = np.array(C.CLIP_MEAN, np.float32), np.array(C.CLIP_STD, np.float32)
    for side in (32, 48):
        frames = rng.integers(0, 256, (2, 3, side, side, 3), dtype=np.uint8)     # [B,T,S,S,3]
        x = torch.from_numpy(frames.reshape(6, side, side, 3).astype(np.float32) / 255.0)
        x = x.permute(0, 3, 1, 2)                                                # NCHW
        if side != 32:
            x = torch.nn.functional.interpolate(x, size=(32, 32), mode="bicubic",
                                                antialias=True, align_corners=False)
        x = (x - torch.from_numpy(mean)[:, None, None]) / torch.from_numpy(std)[:, None, None]
        with torch.no_grad():
            out = model(pixel_values=x)
        pooled_ref = out.image_embeds.numpy()                                    # projected
        plain = np.asarray(_apply(module, params, jnp.asarray(frames)))
        projected = np.asarray(_apply(module.clone(use_projection=True), params,
                                      jnp.asarray(frames)))
        assert plain.shape == (2, 3, 32) and projected.shape == (2, 3, 16)
        assert np.abs(projected.reshape(6, 16) - pooled_ref).max() < PARITY_TOL, side
        with torch.no_grad():
            ref_plain = model.vision_model(pixel_values=x).pooler_output.numpy()
        assert np.abs(plain.reshape(6, 32) - ref_plain).max() < PARITY_TOL, side


def test_full_clip_checkpoint_and_preprocessor_config(tmp_path):
    """A full CLIPModel checkpoint (text + vision, nested vision_config) loads its vision
    side; preprocessor_config.json's mean/std replace the defaults."""
    torch, transformers = _need("torch"), _need("transformers")
    config = transformers.CLIPConfig(
        text_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, vocab_size=50, max_position_embeddings=8,
                         pad_token_id=0, bos_token_id=1, eos_token_id=2),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=2, image_size=16, patch_size=8),
        projection_dim=8)
    model = transformers.CLIPModel(config).eval()
    model.save_pretrained(tmp_path, safe_serialization=True)
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(
        {"image_mean": [0.5, 0.5, 0.5], "image_std": [0.25, 0.25, 0.25]}))
    module, params = C.load_clip_vision(tmp_path, use_projection=True)
    assert module.config.n_heads == 2 and module.config.projection_dim == 8
    assert module.config.image_mean == (0.5, 0.5, 0.5)
    frames = np.random.default_rng(3).integers(0, 256, (1, 2, 16, 16, 3), dtype=np.uint8)
    pixels = (frames.reshape(2, 16, 16, 3).astype(np.float32) / 255.0 - 0.5) / 0.25
    with torch.no_grad():
        pooled = model.vision_model(
            pixel_values=torch.from_numpy(pixels.transpose(0, 3, 1, 2))).pooler_output
        ref = model.visual_projection(pooled).numpy()
    out = np.asarray(_apply(module, params, jnp.asarray(frames))).reshape(2, 8)
    assert np.abs(out - ref).max() < PARITY_TOL


def test_clip_loader_errors_name_the_file(tmp_path):
    with pytest.raises(WeightFileError, match="no such file"):
        C.load_clip_vision(tmp_path / "missing")
    with pytest.raises(WeightFileError, match="no model.safetensors") as info:
        C.load_clip_vision(tmp_path)
    assert info.value.path == str(tmp_path)
    not_clip = tmp_path / "other.safetensors"
    _write_safetensors(not_clip, {"encoder.conv1.weight": np.zeros((4, 80, 3), np.float32)})
    with pytest.raises(WeightFileError, match="no CLIP vision tower") as info:
        C.load_clip_vision(not_clip)
    assert info.value.path == str(not_clip)


# ------------------------------------------------------------------- safetensors reader

def _write_safetensors(path, tensors: dict[str, np.ndarray]) -> None:
    """Minimal writer for error-case files (the round-trip test uses the real package)."""
    header, offset, blobs = {}, 0, []
    tags = {np.dtype("float32"): "F32", np.dtype("float16"): "F16", np.dtype("int64"): "I64"}
    for name, array in tensors.items():
        blob = np.ascontiguousarray(array).tobytes()
        header[name] = {"dtype": tags[array.dtype], "shape": list(array.shape),
                        "data_offsets": [offset, offset + len(blob)]}
        offset += len(blob)
        blobs.append(blob)
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"".join(blobs))


def test_safetensors_reader_matches_the_safetensors_package(tmp_path):
    st_numpy = _need("safetensors.numpy")
    rng = np.random.default_rng(4)
    tensors = {"a.f32": rng.standard_normal((3, 5)).astype(np.float32),
               "b.f16": rng.standard_normal((7,)).astype(np.float16),
               "c.i64": rng.integers(-5, 5, (2, 2, 2)),
               "d.u8": rng.integers(0, 255, (4,), dtype=np.uint8),
               "e.bool": rng.random((3,)) > 0.5,
               "f.scalar": np.array(3.5, np.float32)}
    path = tmp_path / "mix.safetensors"
    st_numpy.save_file(tensors, str(path), metadata={"format": "np"})
    ours, theirs = safetensors_io.read_safetensors(path), st_numpy.load_file(str(path))
    assert ours.keys() == theirs.keys() == tensors.keys()
    for name in tensors:
        assert ours[name].dtype == theirs[name].dtype and np.array_equal(ours[name], theirs[name])
    assert safetensors_io.read_safetensors_metadata(path) == {"format": "np"}
    assert safetensors_io.read_safetensors(path, prefix="a.").keys() == {"a.f32"}


def test_safetensors_bfloat16_widens_exactly(tmp_path):
    torch = _need("torch")
    st_torch = _need("safetensors.torch")
    values = torch.randn(5, 3, generator=torch.Generator().manual_seed(5)).to(torch.bfloat16)
    path = tmp_path / "bf16.safetensors"
    st_torch.save_file({"w": values}, str(path))
    out = safetensors_io.read_safetensors(path)["w"]
    assert out.dtype == np.float32 and np.array_equal(out, values.float().numpy())


def test_safetensors_reader_errors(tmp_path):
    good = tmp_path / "good.safetensors"
    _write_safetensors(good, {"x": np.arange(100, dtype=np.float32)})
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(good.read_bytes()[:-10])
    with pytest.raises(WeightFileError, match="truncated") as info:
        safetensors_io.read_safetensors(cut)
    assert info.value.path == str(cut)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
    with pytest.raises(WeightFileError, match="not valid JSON"):
        safetensors_io.read_safetensors(garbage)
    huge = tmp_path / "huge.safetensors"
    huge.write_bytes(struct.pack("<Q", 10**12) + b"{}")
    with pytest.raises(WeightFileError, match="does not fit"):
        safetensors_io.read_safetensors(huge)
    empty = tmp_path / "empty.safetensors"
    empty.touch()
    with pytest.raises(WeightFileError, match="empty"):
        safetensors_io.read_safetensors(empty)
