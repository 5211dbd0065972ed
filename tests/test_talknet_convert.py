"""The torch reference student (avdetect/bench/torch_ref.py) and the TalkNet / CMDFD
checkpoint converter (avdetect/convert/talknet.py).

Independent references: the reference's saved parameter list
(../shared/research/talknet_state_dict.tsv) and the torch reference's own forward pass
(torch eval mode, randomised BatchNorm statistics); the trainer run checks that
``config.init_from`` starts from exactly the converted weights.
"""

from __future__ import annotations

import ast
import math
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from avdetect import checkpointing, sharding, train  # noqa: E402
from avdetect.input_pipeline import make_train_iterator  # noqa: E402
from avdetect.bench import torch_ref  # noqa: E402
from avdetect.convert import talknet  # noqa: E402
from avdetect.convert.variables_file import load_variables, save_variables  # noqa: E402
from avdetect.errors import CheckpointError  # noqa: E402
from avdetect.methods import build_method  # noqa: E402
from avdetect.models.audio import mfcc_from_logmel  # noqa: E402
from avdetect.steps import Steps  # noqa: E402

TSV = pathlib.Path(__file__).resolve().parents[2] / "shared" / "research" / "talknet_state_dict.tsv"


def _reference_entries() -> list[tuple[str, tuple[int, ...]]]:
    if not TSV.is_file():
        pytest.fail(f"reference parameter list missing: {TSV}")
    rows = []
    for line in TSV.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, shape, _ = line.split("\t")
        rows.append((name, tuple(ast.literal_eval(shape))))
    return rows


def _random_reference(dims: dict, stem_per_clip: bool, seed: int = 0):
    """The torch reference in eval mode with every weight random, BatchNorm running
    statistics included, and non-default PReLU / norm parameters."""
    model = torch_ref.build(stem_per_clip=stem_per_clip, seed=seed, dims=dims)
    torch_ref.randomise_bn_stats(model, seed)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("gamma", "beta")) or ".norm" in name or (
                    "visualTCN" in name and name.endswith("net.3.weight")):
                base = 1.0 if name.endswith(("gamma", "norm1.weight", "norm2.weight")) else 0.0
                p.copy_(base + 0.2 * torch.randn(p.shape, generator=g))
    return model.eval()


def _config(variant: str, dims: dict, **extra):
    return talknet.target_config(f"configs/corrdistill.py:{variant},mouth=112,features=mfcc",
                                 dict(torch_ref.flax_overrides(dims), **extra))


def _numpy_state(model) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy() for k, v in model.state_dict().items()}


def _max_diff(ours, ref) -> float:
    return float(np.max(np.abs(np.asarray(ours) - ref.detach().numpy())))


# ------------------------------------------------------------------ reference layout --

def test_torch_reference_state_dict_equals_the_reference_list():
    model = torch_ref.build()
    ours = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
    assert ours == _reference_entries()          # names, shapes and order
    assert torch_ref.count_parameters(model) == torch_ref.N_MODEL_PARAMS == 15_743_451
    counted = sum(math.prod(s) for n, s in _reference_entries()
                  if n.startswith("model.") and not n.endswith(
                      ("running_mean", "running_var", "num_batches_tracked")))
    assert counted == 15_743_451


# ------------------------------------------------------------------------- parity --

@pytest.mark.parametrize("variant,dims,batch,frames,per_clip", [
    ("tiny", torch_ref.TINY, 2, 8, True),      # two clips: our per-clip stem
    ("full", torch_ref.FULL, 1, 6, False),     # the reference's exact stem (one clip)
])
def test_converted_student_gives_the_reference_logits(variant, dims, batch, frames, per_clip):
    model = _random_reference(dims, per_clip)
    config = _config(variant, dims)
    variables, report = talknet.convert_state_dict(_numpy_state(model),
                                                   talknet.template_of(config))
    assert not report["missing"] and not report["unexpected"] and not report["wrong_shape"]
    assert "model.visualFrontend.resnet.layer1.downsample.weight" in report["unused"]
    assert sum(k.startswith("lossCont_Spea.") for k in report["unused"]) == 4
    rng = np.random.default_rng(1)
    mouth = rng.integers(0, 256, (batch, frames, 112, 112)).astype(np.uint8)
    mfcc = rng.normal(size=(batch, 4 * frames, 13)).astype(np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(mouth.astype(np.float32)), torch.from_numpy(mfcc))
    out = build_method(config).module.apply(variables, jnp.asarray(mouth), jnp.asarray(mfcc),
                                            jnp.ones((batch, frames)), train=False)
    assert _max_diff(out["logits"], ref["logits"]) <= 1e-4
    assert _max_diff(out["audio"], ref["audio"]) <= 1e-4     # the correlation branch's input
    assert _max_diff(out["visual"], ref["visual"]) <= 1e-4
    assert float(np.abs(ref["logits"].numpy()).max()) > 0.05   # not a trivially small output


def test_reference_stem_runs_over_the_whole_batch():
    """The quirk the converter documents: with two clips the reference's stem lets each
    clip's boundary frames see the other clip, so it differs from our per-clip stem there
    and only there (checked on the front end's per-frame output)."""
    faithful = _random_reference(torch_ref.TINY, stem_per_clip=False)
    per_clip = _random_reference(torch_ref.TINY, stem_per_clip=True)
    x = torch.rand(2, 8, 112, 112) * 4 - 2
    with torch.no_grad():
        a = faithful.model.visualFrontend(x).numpy()
        b = per_clip.model.visualFrontend(x).numpy()
    differs = np.abs(a - b).max(axis=-1) > 1e-6                    # [B, T]
    expected = np.zeros((2, 8), bool)
    expected[0, -2:] = expected[1, :2] = True
    np.testing.assert_array_equal(differs, expected)


# -------------------------------------------------------------- file + strictness --

def test_cli_reads_wrapped_dataparallel_checkpoint_and_writes_a_variables_file(tmp_path, capsys):
    model = torch_ref.build(seed=3)
    wrapped = {"state_dict": {"module." + k: v for k, v in model.state_dict().items()}}
    ckpt = tmp_path / "student.model"
    torch.save(wrapped, ckpt)
    out = tmp_path / "student.msgpack"
    assert talknet.main([str(ckpt), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "missing: 0" in text and "unexpected: 0" in text and "wrong_shape: 0" in text
    assert "lossCont_Spea.projection_B.weight" in text and "layer1.downsample" in text
    variables, header = load_variables(out)
    assert header["source"] == "student.model"
    w = model.state_dict()["model.crossA2V.self_attn.in_proj_weight"].numpy()
    np.testing.assert_array_equal(
        variables["params"]["fusion"]["cross_a2v"]["attn"]["key"]["kernel"], w[128:256].T)
    np.testing.assert_array_equal(
        variables["batch_stats"]["audio_encoder"]["stage2_0"]["downsample_bn"]["var"],
        model.state_dict()["model.audioEncoder.layer2.0.downsample.1.running_var"].numpy())


def test_mismatches_are_all_listed_and_nothing_is_written(tmp_path):
    state = _numpy_state(torch_ref.build(dims=torch_ref.TINY))
    del state["model.visualConv1D.net.3.bias"]
    state["model.crossA2V.extra.weight"] = np.zeros(3, np.float32)
    state["model.audioEncoder.conv1.weight"] = np.zeros((8, 1, 5, 5), np.float32)
    template = talknet.template_of(_config("tiny", torch_ref.TINY))
    with pytest.raises(CheckpointError) as err:
        talknet.convert_state_dict(state, template, "bad.pt")
    msg = str(err.value)
    assert "bad.pt" in msg and "missing: 2" in msg         # the bias and the stem kernel
    assert "visual_encoder/head_conv2/bias" in msg and "audio_encoder/stem/kernel" in msg
    assert "unexpected: 1" in msg and "model.crossA2V.extra.weight" in msg
    assert "wrong_shape: 1" in msg and "model.audioEncoder.conv1.weight (8, 1, 5, 5)" in msg


# -------------------------------------------------------- fine-tuning via init_from --

def test_converted_checkpoint_fine_tunes_through_the_trainer(tmp_path):
    dims = torch_ref.TINY
    model = _random_reference(dims, stem_per_clip=True, seed=5)
    config = _config("tiny", dims)
    config.model.mouth_size = 112
    variables, _ = talknet.convert_state_dict(_numpy_state(model), talknet.template_of(config))
    path = save_variables(tmp_path / "tiny.msgpack", variables, source="tiny")

    config.data.name = "random"
    config.data.batch_size = 2
    config.data.window = 8
    config.data.random_eval_videos = 2
    config.train.steps = 3
    config.train.log_every = 1
    config.train.eval_every = 0
    config.train.eval_batches = 1
    config.train.ckpt_every = 3
    config.train.fast_compile = True
    if "trim_silence" in config.eval:
        config.eval.trim_silence = False
    config.init_from = str(path)

    # The trainer's starting state is exactly the file: its logits are the reference's.
    mesh = sharding.make_mesh(config.mesh)
    first = sharding.host_to_global(next(make_train_iterator(config, mesh)), mesh)
    method = build_method(config)
    steps = Steps(config, method, mesh, first, train=False)
    state = steps.load_init_from(steps.init(jax.random.PRNGKey(0), first), str(path))
    out = method.predict({"params": state["params"], **state["model_state"]}, first)
    mfcc = np.array(mfcc_from_logmel(jnp.asarray(first["logmel"])))
    with torch.no_grad():
        ref = model(torch.from_numpy(np.asarray(first["mouth"], np.float32)),
                    torch.from_numpy(mfcc))
    assert _max_diff(out["logits"], ref["logits"]) <= 1e-4

    workdir = tmp_path / "run"
    result = train.train_and_evaluate(config, str(workdir))
    assert result["step"] == 3 and np.isfinite(result["train"]["train/loss"])
    final = checkpointing.load_state_numpy(workdir / "checkpoints")["params"]
    start = variables["params"]
    moved = jax.tree.map(lambda a, b: not np.allclose(a, b), final, start)
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(final))
    assert moved["fusion"]["classifier"]["kernel"] and moved["visual_encoder"]["head_conv2"]["kernel"]


def test_init_from_with_the_wrong_model_names_the_file_and_the_mismatch(tmp_path):
    config = _config("tiny", torch_ref.TINY)
    template = talknet.template_of(config)
    variables = jax.tree.map(lambda s: np.zeros(s.shape, np.float32), template)
    variables["params"]["fusion"]["classifier"]["kernel"] = np.zeros((3, 2), np.float32)
    path = save_variables(tmp_path / "wrong.msgpack", variables)
    mesh = sharding.make_mesh(config.mesh)
    config.data.name = "random"
    first = sharding.host_to_global(next(make_train_iterator(config, mesh)), mesh)
    steps = Steps(config, build_method(config), mesh, first, train=False)
    with pytest.raises(CheckpointError, match=r"wrong\.msgpack.*wrong shape.*classifier/kernel"):
        steps.load_init_from(steps.init(jax.random.PRNGKey(0), first), str(path))


# ------------------------------------------------------------- same-run peer ratios --

def test_peer_figures_are_ratios_of_the_two_sides_medians():
    from avdetect.bench import peer_bench

    side = dict(batch=4, window=50, infer_window=250, cpus=[0, 1], stem="per_frame")
    ref = dict(side, train_s=[3.0, 2.0, 9.0], infer_s=[1.5, 1.6, 1.4], train_cpu=[6.0, 5.0, 7.0],
               infer_cpu=[3.0, 3.0, 3.0], peak_rss=2 * 2**30)
    ours = dict(side, train_s=[4.0, 3.5, 5.0], infer_s=[0.5, 0.7, 0.6], train_cpu=[8.0, 8.0, 8.0],
                infer_cpu=[1.0, 1.0, 1.0], peak_rss=3 * 2**30)
    train_fig, infer_fig, rss_fig = peer_bench.compare(ref, ours)
    assert train_fig.value == pytest.approx(3.0 / 4.0) and train_fig.ok is False
    assert "CPU-time ratio 0.75x" in train_fig.note
    assert infer_fig.value == pytest.approx(1.5 / 0.6) and infer_fig.ok is True
    assert rss_fig.value == pytest.approx(1.5) and rss_fig.ok is False
    assert "GFLOP/s" not in train_fig.note                 # no matmul rate measured: no note
    # with the step's FLOP count and the matmul rate: each side's share of that rate
    ours.update(gflop_step=480.0, matmul_gflops=400.0)
    note = peer_bench.compare(ref, ours)[0].note
    assert "ours 120 GFLOP/s = 0.30, torch 160 = 0.40" in note and "(400 GFLOP/s)" in note



def test_convert_command_dispatches_subcommands():
    import subprocess
    import sys

    repo = pathlib.Path(__file__).resolve().parents[1]
    bare = subprocess.run([sys.executable, "-m", "avdetect.convert"], cwd=repo,
                          capture_output=True, text=True, timeout=120)
    assert bare.returncode == 2 and "talknet CKPT --out" in bare.stderr
    missing = subprocess.run([sys.executable, "-m", "avdetect.convert", "talknet",
                              "/nonexistent/student.model", "--out", "/tmp/unused.msgpack"],
                             cwd=repo, capture_output=True, text=True, timeout=300)
    assert missing.returncode == 2 and "/nonexistent/student.model" in missing.stderr
