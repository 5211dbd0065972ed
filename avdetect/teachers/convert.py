"""Convert deep_avsr's published PyTorch teacher checkpoints to Flax params.

    python -m avdetect.teachers.convert --audio audio-only.pt --video video-only.pt \
        --frontend visual_frontend.pt --out DIR

writes ``DIR/audio_net.safetensors``, ``DIR/video_net.safetensors`` and/or
``DIR/visual_frontend.safetensors`` (load them with ``deep_avsr.load_net``, or all at once
with ``--teacher deep_avsr:DIR``). ``visual_frontend.pt`` is deep_avsr's
``TRAINED_FRONTEND_FILE``: the ``VisualFrontend`` state dict that made VideoNet's 512-d
lip features.

Safety and strictness:
* checkpoints are read with ``torch.load(path, map_location='cpu', weights_only=True)``,
  which refuses to unpickle anything but tensors and plain containers;
* every expected key must be present with its exact shape and no other key may exist.
  The reference code loads these files with ``strict=False``, so a renamed key would
  silently leave a teacher random; here all missing / unexpected / misshaped keys are
  listed in one ``CheckpointError``.

Expected torch key names (reconstructed from deep_avsr's ``AudioNet`` / ``VideoNet``
definitions: attribute names ``audioConv``, ``positionalEncoding`` (its ``pe`` buffer is
persistent, so it is in the state dict), ``audioEncoder`` / ``audioDecoder`` (or
``video*``) as ``nn.TransformerEncoder`` -> ``layers.{i}.`` + ``nn.TransformerEncoderLayer``
parameter names, ``outputConv``; for the front end ``frontend3D.0`` (Conv3d),
``frontend3D.1`` (BatchNorm3d) and ``resnet.layer{1-4}.{conv1a,bn1a,conv2a,downsample,
outbna,conv1b,bn1b,conv2b,outbnb}``, from deep_avsr's ``visual_frontend.py``). Every
``ResNetLayer`` there creates ``downsample`` even at stride 1, where its forward never
uses it: ``layer1.downsample.weight`` is required (it is in every real state dict) and
dropped; BatchNorm ``num_batches_tracked`` counters are required and dropped (eval mode
does not read them). Uncertainty, handled explicitly: a checkpoint saved from
``nn.DataParallel`` prefixes every key with ``module.`` (stripped when ALL keys carry it);
a file that wraps the state dict in ``{'state_dict': ...}`` or ``{'model': ...}`` is
unwrapped. The ``pe`` buffer is not a learned weight: it is checked against the formula
and dropped (the Flax module recomputes it).
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
from typing import Any, Mapping

import numpy as np

from avdetect.errors import EmptyFileError, FileMissingError
from avdetect.teachers import alphabet, deep_avsr
from avdetect.teachers.errors import CheckpointError

KINDS = ("audio", "video")                  # the transformer nets
FRONTEND = "frontend"                       # the visual front end (lip features)
ALL_KINDS = KINDS + (FRONTEND,)
_PE_TOLERANCE = 1e-3   # float32 sin/cos of positions up to 2500: ~1e-4 rounding between libs

# torch.nn.TransformerEncoderLayer parameter -> (Flax path under layers_{i}, transform)
_LAYER_MAP = {
    "self_attn.in_proj_weight": ("in_proj/kernel", "linear"),
    "self_attn.in_proj_bias": ("in_proj/bias", "copy"),
    "self_attn.out_proj.weight": ("out_proj/kernel", "linear"),
    "self_attn.out_proj.bias": ("out_proj/bias", "copy"),
    "linear1.weight": ("linear1/kernel", "linear"),
    "linear1.bias": ("linear1/bias", "copy"),
    "linear2.weight": ("linear2/kernel", "linear"),
    "linear2.bias": ("linear2/bias", "copy"),
    "norm1.weight": ("norm1/scale", "copy"),
    "norm1.bias": ("norm1/bias", "copy"),
    "norm2.weight": ("norm2/scale", "copy"),
    "norm2.bias": ("norm2/bias", "copy"),
}


def build_module(kind: str, num_layers: int = deep_avsr.NUM_LAYERS):
    """The Flax net for ``kind`` ('audio' -> AudioNet, 'video' -> VideoNet, 'frontend' ->
    VisualFrontend)."""
    if kind not in ALL_KINDS:
        raise ValueError(f"kind must be one of {ALL_KINDS}, got {kind!r}")
    if kind == FRONTEND:
        return deep_avsr.VisualFrontend()
    cls = deep_avsr.AudioNet if kind == "audio" else deep_avsr.VideoNet
    return cls(num_layers=num_layers)


def _key_map(kind: str, num_layers: int, d: int = deep_avsr.D_MODEL,
             ffn: int = deep_avsr.FFN_DIM, classes: int = alphabet.NUM_CHARS
             ) -> dict[str, tuple[str | None, str, tuple[int, ...]]]:
    """torch key -> (Flax path or None for the PE buffer, transform, torch shape)."""
    layer_shapes = {
        "self_attn.in_proj_weight": (3 * d, d), "self_attn.in_proj_bias": (3 * d,),
        "self_attn.out_proj.weight": (d, d), "self_attn.out_proj.bias": (d,),
        "linear1.weight": (ffn, d), "linear1.bias": (ffn,),
        "linear2.weight": (d, ffn), "linear2.bias": (d,),
        "norm1.weight": (d,), "norm1.bias": (d,), "norm2.weight": (d,), "norm2.bias": (d,),
    }
    out: dict[str, tuple[str | None, str, tuple[int, ...]]] = {
        "positionalEncoding.pe": (None, "pe", (deep_avsr.PE_MAX_LEN, 1, d)),
        "outputConv.weight": ("outputConv/kernel", "conv1x1", (classes, d, 1)),
        "outputConv.bias": ("outputConv/bias", "copy", (classes,)),
    }
    if kind == "audio":
        out["audioConv.weight"] = ("audioConv/kernel", "conv",
                                   (d, deep_avsr.STFT_BINS, deep_avsr.STFT_PER_FRAME))
        out["audioConv.bias"] = ("audioConv/bias", "copy", (d,))
    for stack in ("Encoder", "Decoder"):
        for i in range(num_layers):
            for name, (flax_name, how) in _LAYER_MAP.items():
                out[f"{kind}{stack}.layers.{i}.{name}"] = (
                    f"{kind}{stack}/layers_{i}/{flax_name}", how, layer_shapes[name])
    return out


# deep_avsr ResNetLayer attribute -> (Flax module name in ResNetStage, kind)
_RESNET_MAP = {"conv1a": ("conv1_0", "conv"), "bn1a": ("bn1_0", "bn"),
               "conv2a": ("conv2_0", "conv"), "outbna": ("outbn_0", "bn"),
               "conv1b": ("conv1_1", "conv"), "bn1b": ("bn1_1", "bn"),
               "conv2b": ("conv2_1", "conv"), "outbnb": ("outbn_1", "bn")}


def _frontend_key_map(widths: tuple[int, ...] = (64, 128, 256, 512)
                      ) -> dict[str, tuple[str | None, str, tuple[int, ...]]]:
    """torch key of deep_avsr's VisualFrontend -> (Flax variable path, transform, shape).
    BatchNorm statistics map under ``deep_avsr.STATS_PREFIX``; None paths are dropped."""
    stats = deep_avsr.STATS_PREFIX

    def bn(torch_name, flax_name, c):
        return {f"{torch_name}.weight": (f"{flax_name}/scale", "copy", (c,)),
                f"{torch_name}.bias": (f"{flax_name}/bias", "copy", (c,)),
                f"{torch_name}.running_mean": (f"{stats}{flax_name}/mean", "copy", (c,)),
                f"{torch_name}.running_var": (f"{stats}{flax_name}/var", "copy", (c,)),
                f"{torch_name}.num_batches_tracked": (None, "drop", ())}

    out = {"frontend3D.0.weight": ("trunk/stem_conv", "conv3d", (widths[0], 1, 5, 7, 7))}
    out.update(bn("frontend3D.1", "trunk/stem_bn", widths[0]))
    cin = widths[0]
    for i, cout in enumerate(widths, start=1):
        stage = f"trunk/stage{i}"
        for name, (flax_name, how) in _RESNET_MAP.items():
            key = f"resnet.layer{i}.{name}"
            if how == "bn":
                out.update(bn(key, f"{stage}/{flax_name}", cout))
            else:
                first = name == "conv1a"
                out[f"{key}.weight"] = (f"{stage}/{flax_name}/kernel", "conv2d",
                                        (cout, cin if first else cout, 3, 3))
        # Present in every layer; used only where the stride is 2 (layers 2-4).
        out[f"resnet.layer{i}.downsample.weight"] = (
            f"{stage}/downsample/kernel" if i > 1 else None,
            "conv2d" if i > 1 else "drop", (cout, cin, 1, 1))
        cin = cout
    return out


def expected_torch_shapes(kind: str, num_layers: int = deep_avsr.NUM_LAYERS
                          ) -> dict[str, tuple[int, ...]]:
    """Every key (-> shape) a deep_avsr ``AudioNet``/``VideoNet``/``VisualFrontend``
    state dict holds."""
    return {k: shape for k, (_, _, shape) in _kind_key_map(kind, num_layers).items()}


def _kind_key_map(kind: str, num_layers: int):
    if kind == FRONTEND:
        return _frontend_key_map()
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {ALL_KINDS}, got {kind!r}")
    return _key_map(kind, num_layers)


def convert_state_dict(state: Mapping[str, np.ndarray], kind: str,
                       num_layers: int = deep_avsr.NUM_LAYERS, *, source: str = "<state dict>"
                       ) -> dict[str, Any]:
    """Torch state dict (numpy arrays) -> nested Flax params of ``build_module(kind)``
    (for the front end: the flat dict of ``deep_avsr.save_net``'s layout, BatchNorm
    statistics under ``STATS_PREFIX``; split it with ``split_stats``).
    Raises ``CheckpointError`` (naming ``source``) listing every missing, unexpected and
    misshaped key, or a positional table that is not deep_avsr's."""
    keymap = _kind_key_map(kind, num_layers)
    found = {k: tuple(np.shape(v)) for k, v in state.items()}
    problems = deep_avsr.shape_problems({k: s for k, (_, _, s) in keymap.items()}, found)
    if problems:
        what = ("visual front end" if kind == FRONTEND else
                f"{kind} teacher with {num_layers}+{num_layers} layers")
        raise CheckpointError(source, f"not a deep_avsr {what}: " + "; ".join(problems))
    flat: dict[str, np.ndarray] = {}
    for key, (flax_path, how, _) in keymap.items():
        w = np.asarray(state[key], np.float32)
        if how == "pe":
            ref = deep_avsr.positional_encoding(w.shape[0], w.shape[2])
            err = float(np.max(np.abs(w[:, 0, :] - ref)))
            if err > _PE_TOLERANCE:
                raise CheckpointError(source, f"{key} differs from the sinusoidal table by "
                                      f"{err:.3g} (max abs): not a deep_avsr checkpoint")
            continue
        if how == "drop":
            continue
        if how == "linear":            # torch Linear weight [out, in] -> Flax kernel [in, out]
            w = w.T
        elif how == "conv":            # torch Conv1d [out, in, k] -> Flax Conv [k, in, out]
            w = w.transpose(2, 1, 0)
        elif how == "conv1x1":         # Conv1d [out, in, 1] -> Dense kernel [in, out]
            w = w[:, :, 0].T
        elif how == "conv2d":          # Conv2d [out, in, kh, kw] -> Flax [kh, kw, in, out]
            w = w.transpose(2, 3, 1, 0)
        elif how == "conv3d":          # Conv3d [out, in, kt, kh, kw] -> [kt, kh, kw, in, out]
            w = w.transpose(2, 3, 4, 1, 0)
        flat[flax_path] = np.ascontiguousarray(w)
    if kind == FRONTEND:
        params, stats = split_stats(flat)
        return {"params": params, "batch_stats": stats}
    return deep_avsr.unflatten_params(flat)


def split_stats(flat: Mapping[str, np.ndarray]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Flat front-end variables -> (nested params, nested BatchNorm statistics)."""
    pre = deep_avsr.STATS_PREFIX
    return (deep_avsr.unflatten_params({k: v for k, v in flat.items() if not k.startswith(pre)}),
            deep_avsr.unflatten_params({k[len(pre):]: v for k, v in flat.items()
                                        if k.startswith(pre)}))


def load_torch_state_dict(path) -> dict[str, np.ndarray]:
    """Read a PyTorch checkpoint safely (``weights_only=True``) into numpy arrays."""
    try:
        import torch
    except ImportError as e:        # torch is only needed for this one-off conversion
        raise CheckpointError(path, "reading PyTorch checkpoints needs torch "
                              "(pip install torch==2.13.0)") from e
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileMissingError(path, "checkpoint file not found")
    if os.path.getsize(path) == 0:
        raise EmptyFileError(path, "checkpoint file is empty")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types; all mean "unusable"
        raise CheckpointError(path, f"torch.load(weights_only=True) refused or failed: "
                              f"{type(e).__name__}: {str(e).splitlines()[0][:300]}") from e
    for wrapper in ("state_dict", "model"):
        if isinstance(obj, Mapping) and isinstance(obj.get(wrapper), Mapping):
            obj = obj[wrapper]
    if not isinstance(obj, Mapping):
        raise CheckpointError(path, f"expected a state dict, found {type(obj).__name__}")
    bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(path, f"entries that are not tensors: {bad[:5]}")
    if obj and all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return {k: v.detach().to(torch.float32).cpu().numpy() for k, v in obj.items()}


def convert_checkpoint(path, kind: str, out_path, num_layers: int = deep_avsr.NUM_LAYERS
                       ) -> pathlib.Path:
    """Convert one checkpoint file and write the Flax params to ``out_path``."""
    state = load_torch_state_dict(path)
    params = convert_state_dict(state, kind, num_layers, source=os.fspath(path))
    stats = None
    if kind == FRONTEND:
        params, stats = params["params"], params["batch_stats"]
    out_path = pathlib.Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    deep_avsr.save_net(out_path, build_module(kind, num_layers), params, batch_stats=stats,
                       source=os.path.basename(os.fspath(path)))
    return out_path


OUT_NAMES = {"audio": "audio_net.safetensors", "video": "video_net.safetensors",
             FRONTEND: "visual_frontend.safetensors"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m avdetect.teachers.convert",
        description="Convert deep_avsr teacher checkpoints (audio-only.pt / video-only.pt / "
                    "visual_frontend.pt) to Flax params (safetensors).")
    parser.add_argument("--audio", help="deep_avsr audio-only checkpoint (AudioNet)")
    parser.add_argument("--video", help="deep_avsr video-only checkpoint (VideoNet)")
    parser.add_argument("--frontend", help="deep_avsr visual front end checkpoint "
                        "(visual_frontend.pt: mouth crops -> the lip features VideoNet reads)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--num-layers", type=int, default=deep_avsr.NUM_LAYERS,
                        help="layers per encoder/decoder stack (6 in the published models)")
    args = parser.parse_args(argv)
    if not args.audio and not args.video and not args.frontend:
        parser.error("give --audio, --video and/or --frontend")
    status = 0
    for kind, src in (("audio", args.audio), ("video", args.video),
                      (FRONTEND, args.frontend)):
        if not src:
            continue
        try:
            dst = convert_checkpoint(src, kind, pathlib.Path(args.out) / OUT_NAMES[kind],
                                     args.num_layers)
            print(f"{kind}: {src} -> {dst}")
        except (CheckpointError, FileMissingError, EmptyFileError) as e:
            print(f"error: {e}", file=sys.stderr)
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
