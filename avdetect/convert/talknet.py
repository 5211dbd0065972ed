"""TalkNet / CMDFD student checkpoint -> our Flax correlation-distillation student.

    python -m avdetect.convert talknet CKPT --out FILE.msgpack [--config CONFIG_ARG]
    python -m avdetect.main --config=configs/corrdistill.py:full,features=mfcc \
        --config.model.visual.stem=3d --config.init_from=FILE.msgpack --workdir=DIR

CKPT is a PyTorch state dict as TalkNet-ASD (``pretrain_TalkSet.model``) or the CMDFD
code saves it - read with ``torch.load(weights_only=True)`` (a dict holding one under
``state_dict`` / ``model`` is unwrapped, a DataParallel ``module.`` prefix stripped, keys of
a bare ``talkNetModel`` without the ``model.`` prefix accepted) - or a ``.safetensors`` file
with the same names (read without torch). The names and shapes are those of
../shared/research/talknet_state_dict.tsv.

Strict: every parameter of the target Flax model must come from the file with its exact
shape, and every file entry must land somewhere or be on the list of reference parameters
the student does not use; otherwise the report lists missing / unexpected / wrong-shape
entries and nothing is written. Entries not used (listed in the report, never silently):

* ``model.visualFrontend.resnet.layer1.downsample.weight`` - created by the reference but
  never applied (stage 1 has stride 1 and an identity skip);
* ``lossCont_Spea.projection_A/B`` - the CMDFD loss module's projections, never used;
* ``lossV.FC`` - TalkNet-ASD's visual-only auxiliary head (training aid, not the student);
* ``*.num_batches_tracked`` - BatchNorm's step counter (bookkeeping, not a weight).

Layout changes: conv weights OIHW / OIDHW / OIK -> HWIO / DHWIO / KIO (the audio
encoder's [freq, time] kernel axes are swapped, since our audio image is [time, freq]);
Linear weights transposed; BatchNorm weight/bias -> scale/bias, running stats ->
``batch_stats`` mean/var; PReLU's (1,) slope -> a scalar; global LayerNorm (1, C, 1) ->
(C,); attention ``in_proj_weight`` / ``bias`` split into query / key / value.

Function: with ``config.model.visual.stem='3d'`` and MFCC input the converted model
computes the reference's per-frame logits (tests/test_talknet_convert.py: max abs
difference <= 1e-4), except that the reference runs its 3-D stem over all B*T frames of a
batch as one sequence (a clip's first and last two frames see the neighbouring clip's
frames) while ours pads each clip on its own - identical for one clip per batch. With the
default ``stem='per_frame'`` only the centre temporal slice of the stem kernel is used
(a different function from the reference's; fine-tuning adapts to it).
"""

from __future__ import annotations

import argparse
import os
import pathlib
import re
import sys
from typing import Any, Callable, Mapping

import numpy as np

from avdetect.errors import AVDetectError, CheckpointError

DEFAULT_CONFIG = "configs/corrdistill.py:full,mouth=112,features=mfcc"
# The submodules of TalkNet's talkNetModel (a state dict saved from that module alone has
# no 'model.' prefix).
_STUDENT_PARTS = ("visualFrontend", "visualTCN", "visualConv1D", "audioEncoder",
                  "crossA2V", "crossV2A", "selfAV")
UNUSED = (
    (re.compile(r"model\.visualFrontend\.resnet\.layer1\.downsample\.weight"),
     "created by the reference but never applied (stage 1: stride 1, identity skip)"),
    (re.compile(r"lossCont_Spea\.projection_[AB]\.(weight|bias)"),
     "the CMDFD loss module's projection, defined and never used"),
    (re.compile(r"lossV\.FC\.(weight|bias)"),
     "TalkNet-ASD's visual-only auxiliary head, not part of the student"),
)

# Layout changes, torch -> Flax.
_conv2d = lambda w: w.transpose(2, 3, 1, 0)             # OIHW -> HWIO  # noqa: E731
_conv2d_ft = lambda w: w.transpose(3, 2, 1, 0)          # O,I,freq,time -> time,freq,I,O  # noqa: E731
_conv3d = lambda w: w.transpose(2, 3, 4, 1, 0)          # OIDHW -> DHWIO  # noqa: E731
_conv1d = lambda w: w.transpose(2, 1, 0)                # OIK -> KIO  # noqa: E731
_linear = lambda w: w.T                                 # noqa: E731
_same = lambda w: w                                     # noqa: E731

Target = tuple[str, tuple[str, ...], Callable[[np.ndarray], np.ndarray]]

_FRONT = {"conv1a": "conv1_0", "bn1a": "bn1_0", "conv2a": "conv2_0", "outbna": "outbn_0",
          "conv1b": "conv1_1", "bn1b": "bn1_1", "conv2b": "conv2_1", "outbnb": "outbn_1",
          "downsample": "downsample"}
_TCN = {"1": "bn", "2": "depthwise", "3": "prelu", "4": "gln", "5": "pointwise"}
_HEAD = {"0": "head_conv1", "1": "head_bn", "3": "head_conv2"}
_ATTN = {"crossA2V": "cross_a2v", "crossV2A": "cross_v2a", "selfAV": "self_av"}


def _bn(base: tuple[str, ...], leaf: str) -> list[Target] | None:
    return {"weight": [("params", base + ("scale",), _same)],
            "bias": [("params", base + ("bias",), _same)],
            "running_mean": [("batch_stats", base + ("mean",), _same)],
            "running_var": [("batch_stats", base + ("var",), _same)]}.get(leaf)


def _linear_leaf(base: tuple[str, ...], leaf: str) -> list[Target] | None:
    return {"weight": [("params", base + ("kernel",), _linear)],
            "bias": [("params", base + ("bias",), _same)]}.get(leaf)


def _split3(i: int, transform) -> Callable[[np.ndarray], np.ndarray]:
    return lambda w: transform(np.split(w, 3, axis=0)[i])


def targets(name: str) -> list[Target] | None:
    """Where the torch entry ``name`` goes: [(collection, Flax path, layout change)], or
    None if the name is not one this converter knows."""
    p = name.split(".")
    if p[0] == "lossAV" and p[1:2] == ["FC"]:
        return _linear_leaf(("fusion", "classifier"), p[-1])
    if p[0] != "model" or len(p) < 3:
        return None
    part, rest, leaf = p[1], p[2:-1], p[-1]
    if part == "visualFrontend":
        fe = ("visual_encoder", "frontend")
        if rest == ["frontend3D", "0"] and leaf == "weight":
            return [("params", fe + ("stem_conv",), _conv3d)]
        if rest == ["frontend3D", "1"]:
            return _bn(fe + ("stem_bn",), leaf)
        if len(rest) == 3 and rest[0] == "resnet" and rest[1].startswith("layer") \
                and rest[2] in _FRONT:
            base = fe + (f"stage{rest[1][5:]}", _FRONT[rest[2]])
            if rest[2].startswith("conv") or rest[2] == "downsample":
                return [("params", base + ("kernel",), _conv2d)] if leaf == "weight" else None
            return _bn(base, leaf)
        return None
    if part == "visualTCN" and len(rest) == 4 and rest[0] == rest[2] == "net" \
            and rest[1].isdigit():
        return _tcn(rest[1], rest[3], leaf)
    if part == "visualConv1D" and len(rest) == 2 and rest[0] == "net" and rest[1] in _HEAD:
        base = ("visual_encoder", _HEAD[rest[1]])
        if rest[1] == "1":
            return _bn(base, leaf)
        return {"weight": [("params", base + ("kernel",), _conv1d)],
                "bias": [("params", base + ("bias",), _same)]}.get(leaf)
    if part == "audioEncoder":
        return _audio(rest, leaf)
    if part in _ATTN:
        return _attention(("fusion", _ATTN[part]), rest, leaf)
    return None


def _tcn(block: str, idx: str, leaf: str) -> list[Target] | None:
    if idx not in _TCN:
        return None
    base = ("visual_encoder", f"tcn{block}", _TCN[idx])
    if idx == "1":
        return _bn(base, leaf)
    if idx in ("2", "5") and leaf == "weight":
        return [("params", base + ("kernel",), _conv1d)]
    if idx == "3" and leaf == "weight":
        return [("params", base + ("slope",), lambda w: w.reshape(()))]
    if idx == "4" and leaf in ("gamma", "beta"):
        return [("params", base + ("scale" if leaf == "gamma" else "bias",),
                 lambda w: w.reshape(-1))]
    return None


def _audio(rest: list[str], leaf: str) -> list[Target] | None:
    enc = ("audio_encoder",)
    if rest == ["conv1"] and leaf == "weight":
        return [("params", enc + ("stem", "kernel"), _conv2d_ft)]
    if rest == ["bn1"]:
        return _bn(enc + ("stem_bn",), leaf)
    if len(rest) < 3 or not rest[0].startswith("layer") or not rest[1].isdigit():
        return None
    block = enc + (f"stage{rest[0][5:]}_{rest[1]}",)
    sub = rest[2:]
    if sub in (["conv1"], ["conv2"]) and leaf == "weight":
        return [("params", block + (sub[0], "kernel"), _conv2d_ft)]
    if sub in (["bn1"], ["bn2"]):
        return _bn(block + (sub[0],), leaf)
    if sub == ["downsample", "0"] and leaf == "weight":
        return [("params", block + ("downsample", "kernel"), _conv2d_ft)]
    if sub == ["downsample", "1"]:
        return _bn(block + ("downsample_bn",), leaf)
    if sub in (["se", "fc", "0"], ["se", "fc", "2"]):
        return _linear_leaf(block + ("se", "fc1" if sub[2] == "0" else "fc2"), leaf)
    return None


def _attention(base: tuple[str, ...], rest: list[str], leaf: str) -> list[Target] | None:
    if rest == ["self_attn"] and leaf in ("in_proj_weight", "in_proj_bias"):
        tf = _linear if leaf.endswith("weight") else _same
        kind = "kernel" if leaf.endswith("weight") else "bias"
        return [("params", base + ("attn", qkv, kind), _split3(i, tf))
                for i, qkv in enumerate(("query", "key", "value"))]
    if rest == ["self_attn", "out_proj"]:
        return _linear_leaf(base + ("attn", "out"), leaf)
    if rest in (["linear1"], ["linear2"]):
        return _linear_leaf(base + (rest[0],), leaf)
    if rest in (["norm1"], ["norm2"]):
        return {"weight": [("params", base + (rest[0], "scale"), _same)],
                "bias": [("params", base + (rest[0], "bias"), _same)]}.get(leaf)
    return None


def normalise_names(state: Mapping[str, Any]) -> dict[str, Any]:
    """Strip DataParallel ``module.`` prefixes and add ``model.`` to the keys of a bare
    talkNetModel state dict."""
    out = {}
    for k, v in state.items():
        while k.startswith("module."):
            k = k[len("module."):]
        if k.split(".", 1)[0] in _STUDENT_PARTS:
            k = "model." + k
        out[k] = v
    return out


def convert_state_dict(state: Mapping[str, np.ndarray], template: Mapping[str, Any],
                       source: str = "checkpoint") -> tuple[dict, dict]:
    """(Flax variables, report) from a torch state dict (numpy arrays).

    ``template``: the target model's variables or their shapes ({'params': ...,
    'batch_stats': ...}). Report keys: converted (count), unused ({name: why}),
    bookkeeping (num_batches_tracked names), missing / unexpected / wrong_shape (lists).
    Raises CheckpointError (with the full report in its message) unless everything fits.
    """
    from flax.traverse_util import flatten_dict, unflatten_dict

    want = {(col,) + k: tuple(v.shape) for col, tree in template.items()
            for k, v in flatten_dict(dict(tree)).items()}
    got: dict[tuple[str, ...], np.ndarray] = {}
    report: dict[str, Any] = {"converted": 0, "unused": {}, "bookkeeping": [],
                              "missing": [], "unexpected": [], "wrong_shape": []}
    for name, value in normalise_names(state).items():
        if name.endswith("num_batches_tracked"):
            report["bookkeeping"].append(name)
            continue
        why = next((w for pat, w in UNUSED if pat.fullmatch(name)), None)
        if why is not None:
            report["unused"][name] = why
            continue
        tgts = targets(name)
        if tgts is None or any((col,) + path not in want for col, path, _ in tgts):
            report["unexpected"].append(f"{name} {tuple(np.shape(value))}")
            continue
        for col, path, transform in tgts:
            try:
                arr = np.asarray(transform(np.asarray(value, np.float32)), np.float32)
            except ValueError:   # e.g. in_proj with a row count not divisible by 3
                arr = None
            key = (col,) + path
            if arr is None or arr.shape != want[key]:
                report["wrong_shape"].append(
                    f"{name} {tuple(np.shape(value))} -> {'/'.join(key)} wants {want[key]}")
                continue
            got[key] = arr
        report["converted"] += 1
    report["missing"] = sorted("/".join(k) + f" {want[k]}" for k in set(want) - set(got))
    if report["missing"] or report["unexpected"] or report["wrong_shape"]:
        raise CheckpointError(f"{source}: does not match the target student\n"
                              + format_report(report))
    return unflatten_dict(got), report


def format_report(report: Mapping[str, Any]) -> str:
    """The key / shape report as text (every entry listed)."""
    lines = [f"converted tensors: {report['converted']}"]
    for label in ("missing", "unexpected", "wrong_shape"):
        items = report[label]
        lines.append(f"{label}: {len(items)}")
        lines += [f"  {x}" for x in items]
    lines.append(f"unused (in the checkpoint, not in the student): {len(report['unused'])}")
    lines += [f"  {k}: {why}" for k, why in report["unused"].items()]
    lines.append(f"bookkeeping (BatchNorm step counters, not weights): "
                 f"{len(report['bookkeeping'])}")
    return "\n".join(lines)


def read_checkpoint(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """A torch checkpoint (``torch.load(weights_only=True)``) or a ``.safetensors`` file
    as {name: float32 array}."""
    path = pathlib.Path(path)
    if path.suffix == ".safetensors":
        from avdetect.pretrained.safetensors_io import read_safetensors

        return {k: np.asarray(v, np.float32) for k, v in read_safetensors(path).items()}
    from avdetect.teachers.convert import load_torch_state_dict

    return load_torch_state_dict(path)


def target_config(config_ref: str = DEFAULT_CONFIG, overrides: Mapping[str, Any] | None = None):
    """The config whose student the checkpoint is converted for (``path.py:arg`` plus
    dotted ``config.model`` overrides); a missing config file raises ConfigError."""
    from avdetect.config_specs import load_config

    config = load_config(config_ref)
    for key, value in (overrides or {}).items():
        node = config.model
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return config


def template_of(config) -> dict:
    """Shapes of the config's student variables (no weights drawn)."""
    import jax
    import jax.numpy as jnp

    from avdetect.methods import build_method
    from avdetect.data.random_batches import example_batch

    method = build_method(config)
    dim = config.model.get("n_mfcc", 13) if config.model.get("audio_features") == "mfcc" else 80
    batch = {k: jnp.asarray(v) for k, v in example_batch(config, 1, 4, audio_dim=dim).items()}
    return dict(jax.eval_shape(method.init, jax.random.key(0), batch))


def convert_file(ckpt: str | os.PathLike, out: str | os.PathLike, config=None
                 ) -> tuple[pathlib.Path, dict]:
    """Convert ``ckpt`` for ``config`` (default :data:`DEFAULT_CONFIG`) and write ``out``."""
    from avdetect.convert.variables_file import save_variables

    config = config if config is not None else target_config()
    state = read_checkpoint(ckpt)
    variables, report = convert_state_dict(state, template_of(config), os.fspath(ckpt))
    path = save_variables(out, variables, source=os.path.basename(os.fspath(ckpt)),
                          report={k: v for k, v in report.items() if k != "bookkeeping"})
    return path, report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m avdetect.convert talknet",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("ckpt", help="TalkNet / CMDFD student state dict (.model/.pt/.pth or "
                                 ".safetensors)")
    ap.add_argument("--out", required=True, help="variables file to write (.msgpack)")
    ap.add_argument("--config", default=DEFAULT_CONFIG,
                    help=f"target config FILE:ARG (default {DEFAULT_CONFIG})")
    args = ap.parse_args(argv)
    try:
        path, report = convert_file(args.ckpt, args.out, target_config(args.config))
    except AVDetectError as e:      # missing / unreadable file, key or shape mismatch
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_report(report))
    print(f"wrote {path}. Train from it with --config.init_from={path} "
          "(and --config.model.visual.stem=3d for the reference's stem)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
