"""``vsr_self``: a small lip-reading network trained here, offline, as the video-side
teacher over the audio teacher's alphabet (``alphabet.VISEMES``, 14 classes).

No lip-reading weights ship in any package this project can install, so the video side of
the correlation target is learned by cross-modal distillation: on real footage (the
``realtalk`` real clips of the train split, identities never in test) the audio teacher
``asr_align`` (Whisper transcript + forced alignment) says which viseme is being spoken
at every frame; this network learns to say the same from the mouth crops alone. On a
genuine clip both sides then agree where the lips are readable; on a lip-sync or
dubbed fake the audio side follows the new audio while this side follows the lips.

Model (``LipReader``): a front end that turns a clip into per-frame features, then a
small temporal network.

* front end ``mouth`` (``MouthFeatures``), on uint8 mouth crops [T, 88, 88]: 3 motion
  features (mean absolute frame difference over the crop, its lips region and its upper
  third, z-scored per clip) and D "eigenlip" coefficients (the crop minus the clip's mean
  crop, on the training residuals' principal axes, whitened). The input is pluggable
  (``INPUTS``): issue 17's lip landmarks plug in as another front end.
* ``TemporalNet``: Dense 16 -> 3 residual pre-LN dilated Conv1d(k=5; dilation 1, 2, 4:
  +-14 frames of context) blocks -> LN -> Dense 14 -> softmax; padded frames are zeroed
  before every temporal conv, so padding never changes a valid frame.

Why so small, and D = 0 by default: with 37 training clips a learned CNN over the crops
and appearance features (eigenlips) fitted the training identities and did no better, or
worse, than the prior on held-out identities; lip *motion* is what transfers across
people (it tells speech from silence). The defaults (D = 0, width 16, no dropout, 600
steps) were chosen on the validation identities; METHODS.md 1.3 has the figures.

Training (``train``): random 48-frame windows, batch 32, AdamW + cosine decay, the soft
cross-entropy -sum_c p_audio log q_video (= KL(p||q) + H(p); the teacher's entropy is a
constant); augmentation by horizontal flips and 4 px shifts of whole clips.

Weights: a safetensors file (``vsr_self-v1.safetensors``) whose metadata holds the format
version, the network config and a description of the training data and its held-out
agreement. The teacher looks for it in ``$AVDETECT_TEACHER_DIR`` or
``~/.cache/avdetect/teachers/``; ``--teacher vsr_self:PATH`` (``VsrSelfTeacher(weights=
PATH)``) names another. It is never committed (it is made from research-only clips);
retrain it with::

    nice -n 5 python -m avdetect.teachers.vsr_self train --data_dir ../shared/realtalk

(training code: :mod:`avdetect.teachers.vsr_self_train`), which runs ``asr_align`` and the
face tracker over the real clips once (cached in ``~/.cache/avdetect/vsr_self_data``),
trains, then prints the per-frame agreement with the
audio teacher on the validation and test identities next to chance; ``evaluate`` also
prints the correlation target r_t of real pairs against audio shifted or swapped.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import sys
from typing import Any, Iterable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from avdetect import cpu_compile
from avdetect.errors import ConfigError, FileMissingError
from avdetect.teachers import alphabet, posteriors
from avdetect.teachers.errors import CheckpointError

VERSION = 1
FORMAT = "avdetect.vsr_self"
FILE_NAME = f"vsr_self-v{VERSION}.safetensors"
TEACHER_DIR_ENV = "AVDETECT_TEACHER_DIR"
RETRAIN_COMMAND = ("nice -n 5 python -m avdetect.teachers.vsr_self train "
                   "--data_dir ../shared/realtalk")


def default_teacher_dir() -> pathlib.Path:
    """``$AVDETECT_TEACHER_DIR`` or ``~/.cache/avdetect/teachers``."""
    env = os.environ.get(TEACHER_DIR_ENV)
    return pathlib.Path(env) if env else pathlib.Path.home() / ".cache" / "avdetect" / "teachers"


def default_weights_path() -> pathlib.Path:
    return default_teacher_dir() / FILE_NAME


def default_cache_dir() -> pathlib.Path:
    return pathlib.Path.home() / ".cache" / "avdetect" / f"vsr_self_data-v{VERSION}"


class TeacherWeightsMissing(FileMissingError, ConfigError):
    """The vsr_self weights file is not there; the message says how to make it. A
    ConfigError too: a build that names the teacher stops before it starts."""
    kind = "missing_teacher_weights"


# --- front ends: a clip's input -> per-frame features -------------------------------------

@dataclasses.dataclass(frozen=True)
class MouthFeatures:
    """Per-frame features of uint8 mouth crops [T, H, W] -> float32 [T, 3 + D].

    Each crop is area-resized to ``size`` px and standardised (illumination). Then
    * motion (3): mean |frame - previous frame| over the whole crop, its lower centre (the
      lips) and its upper third (nose: head motion), z-scored over the clip;
    * shape (D): the crop minus the clip's mean crop (what the mouth does, not who it
      is), projected on the first D principal axes of the training clips' such residuals
      ("eigenlips"), whitened.
    Both are normalised per clip, so the teacher reads a whole clip at once (it does).
    """
    mean: np.ndarray                # [size * size] mean residual of the training frames
    basis: np.ndarray               # [size * size, D] whitened principal axes
    size: int = 32

    @property
    def dim(self) -> int:
        return 3 + self.basis.shape[1]

    @staticmethod
    def standardised(mouth: np.ndarray, size: int) -> np.ndarray:
        import cv2

        mouth = np.asarray(mouth)
        if mouth.ndim != 3 or mouth.shape[0] == 0:
            raise ValueError(f"mouth crops must be [T, H, W] with T > 0, got {mouth.shape}")
        x = np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA)
                      for f in mouth]).astype(np.float32)
        x -= x.mean(axis=(1, 2), keepdims=True)
        return x / (x.std(axis=(1, 2), keepdims=True) + 1e-3)              # [T, s, s]

    @classmethod
    def fit(cls, clips: Iterable[np.ndarray], components: int, size: int = 32
            ) -> "MouthFeatures":
        """Principal axes of the clip-mean-removed crops of ``clips`` (training clips)."""
        res = np.concatenate([_residual(cls.standardised(m, size)) for m in clips])
        mean = res.mean(axis=0)
        _, s, vt = np.linalg.svd(res - mean, full_matrices=False)
        scale = np.maximum(s[:components] / np.sqrt(res.shape[0]), 1e-6)
        return cls(mean.astype(np.float32), (vt[:components] / scale[:, None]).T
                   .astype(np.float32), size)

    def __call__(self, mouth: np.ndarray) -> np.ndarray:
        x = self.standardised(mouth, self.size)
        s = self.size
        d = np.abs(np.diff(x, axis=0, prepend=x[:1]))
        motion = np.stack([d.mean(axis=(1, 2)), d[:, s // 3:, s // 4:-(s // 4)].mean(axis=(1, 2)),
                           d[:, :s // 3].mean(axis=(1, 2))], axis=1)
        motion = (motion - motion.mean(axis=0)) / (motion.std(axis=0) + 1e-3)
        shape = (_residual(x) - self.mean) @ self.basis
        return np.concatenate([motion, shape], axis=1).astype(np.float32)


def _residual(x: np.ndarray) -> np.ndarray:
    """[T, s, s] -> [T, s*s] minus the clip's mean frame."""
    flat = x.reshape(x.shape[0], -1)
    return flat - flat.mean(axis=0)


def _lips_front_end(**_):
    raise ConfigError("vsr_self input 'lips' needs the lip-landmark stream (issue 17), "
                      "which has not landed; use input='mouth'")


# Input name -> front end class. A new input (issue 17's lip landmarks) adds an entry with
# the same interface (fit on training clips, clip -> [T, dim] features, arrays saved in
# the weights file); the temporal network and the training loop stay as they are.
INPUTS: dict[str, Any] = {"mouth": MouthFeatures, "lips": _lips_front_end}


# --- the temporal network -----------------------------------------------------------------

class TemporalNet(nn.Module):
    """Per-frame features [B, T, F] -> viseme logits [B, T, num_classes]: input dropout ->
    Dense(hidden) -> residual pre-LN dilated Conv1d(kernel) blocks -> LN -> Dense.
    Padded frames (mask False) are zeroed before every temporal conv, so padding never
    changes a valid frame's output."""
    hidden: int = 16
    dilations: Sequence[int] = (1, 2, 4)
    kernel: int = 5
    dropout: float = 0.0
    num_classes: int = alphabet.NUM_VISEMES

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array | None = None,
                 train: bool = False) -> jax.Array:
        keep = 1.0 if mask is None else mask[..., None].astype(x.dtype)
        h = nn.Dropout(self.dropout, deterministic=not train)(x * keep)
        h = nn.Dense(self.hidden, name="proj")(h)
        for i, d in enumerate(self.dilations):
            y = nn.gelu(nn.LayerNorm(name=f"tln{i}")(h)) * keep
            pad = d * (self.kernel // 2)
            h = h + nn.Conv(self.hidden, (self.kernel,), kernel_dilation=(d,),
                            padding=((pad, pad),), name=f"tconv{i}")(y)
        return nn.Dense(self.num_classes, name="head")(nn.LayerNorm(name="out_ln")(h))

    @property
    def reach(self) -> int:
        """Frames on each side that can change a frame's output."""
        return sum(d * (self.kernel // 2) for d in self.dilations)


@dataclasses.dataclass
class LipReader:
    """The trained teacher model: a front end (``INPUTS[input]``) and the temporal net."""
    front_end: MouthFeatures
    net: TemporalNet
    params: Any
    input: str = "mouth"

    def config(self) -> dict[str, Any]:
        return {"input": self.input, "size": self.front_end.size,
                "components": int(self.front_end.basis.shape[1]), "hidden": self.net.hidden,
                "dilations": list(self.net.dilations), "kernel": self.net.kernel,
                "dropout": self.net.dropout, "num_classes": self.net.num_classes}

    def predict(self, clip: np.ndarray) -> np.ndarray:
        """Per-frame posteriors float32 [T, K] of one clip."""
        return predict_features(self.net, self.params, self.front_end(clip))


_APPLY: dict[TemporalNet, Any] = {}


def _apply_fn(net: TemporalNet):
    if net not in _APPLY:
        _APPLY[net] = jax.jit(lambda p, x, m: jax.nn.softmax(
            net.apply({"params": p}, x, m), axis=-1), compiler_options=cpu_compile.inference())
    return _APPLY[net]


BUCKET = 50                     # frames: padding granularity (few compiled shapes)
MAX_CHUNK = 1000                # frames per forward pass on long clips


def predict_features(net: TemporalNet, params: Any, feats: np.ndarray) -> np.ndarray:
    """Per-frame posteriors float32 [T, K] from one clip's features [T, F].

    Long clips run in chunks of ``MAX_CHUNK`` frames that read ``net.reach`` extra frames
    on each side, and each piece is zero-padded (masked) to a multiple of ``BUCKET``; both
    leave the result equal to one pass over the whole clip."""
    total = feats.shape[0]
    apply = _apply_fn(net)
    out = np.zeros((total, net.num_classes), np.float32)
    for start in range(0, total, MAX_CHUNK):
        stop = min(start + MAX_CHUNK, total)
        lo, hi = max(start - net.reach, 0), min(stop + net.reach, total)
        n = hi - lo
        padded = -(-n // BUCKET) * BUCKET
        piece = np.zeros((1, padded, feats.shape[1]), np.float32)
        piece[0, :n] = feats[lo:hi]
        mask = np.arange(padded)[None] < n
        probs = np.asarray(apply(params, jnp.asarray(piece), jnp.asarray(mask)))[0]
        out[start:stop] = probs[start - lo: stop - lo]
    return out


# --- weights file -------------------------------------------------------------------------

_FRONT = "front_end/"           # flat-key prefix of the front end's arrays


def save_weights(path, model: LipReader, training: dict[str, Any]) -> pathlib.Path:
    """Write the model with the format/version, its config and ``training`` (what data,
    how, held-out agreement) in the safetensors metadata."""
    from safetensors.numpy import save_file

    from avdetect.teachers.deep_avsr import flatten_params

    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"format": FORMAT, "version": str(VERSION), "config": json.dumps(model.config()),
            "training": json.dumps(training)}
    flat = flatten_params(model.params)
    flat[_FRONT + "mean"] = model.front_end.mean
    flat[_FRONT + "basis"] = model.front_end.basis
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: np.ascontiguousarray(v, np.float32) for k, v in flat.items()}, str(tmp),
              metadata=meta)
    os.replace(tmp, path)
    return path


def load_weights(path) -> tuple[LipReader, dict[str, Any]]:
    """(model, training description) from a file written by ``save_weights``.
    Raises ``TeacherWeightsMissing`` (with the retrain command) when the file is absent,
    ``CheckpointError`` naming the file when it is not a vsr_self v1 weights file."""
    from safetensors import safe_open

    from avdetect.teachers.deep_avsr import shape_problems, tree_shapes, unflatten_params

    path = pathlib.Path(path).expanduser()
    if not path.is_file():
        raise TeacherWeightsMissing(path, "teacher 'vsr_self' is not trained yet (no weights "
                                    "file here; none ship, they are made from research-only "
                                    f"clips): train them with `{RETRAIN_COMMAND}` (writes "
                                    f"{default_weights_path()}; set {TEACHER_DIR_ENV} or use "
                                    "--teacher vsr_self:PATH for another location)")
    try:
        with safe_open(str(path), framework="numpy") as f:
            meta = f.metadata() or {}
            flat = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # noqa: BLE001 - safetensors raises several types for bad files
        raise CheckpointError(path, f"not a safetensors file ({type(e).__name__}: {e})") from e
    if meta.get("format") != FORMAT:
        raise CheckpointError(path, f"not a vsr_self weights file (format "
                              f"{meta.get('format')!r}, expected {FORMAT!r})")
    if meta.get("version") != str(VERSION):
        raise CheckpointError(path, f"vsr_self weights version {meta.get('version')} but this "
                              f"code reads version {VERSION}; retrain with `{RETRAIN_COMMAND}`")
    try:
        config = json.loads(meta["config"])
        training = json.loads(meta.get("training", "{}"))
        if config["input"] != "mouth":
            INPUTS[config["input"]]()               # refuses inputs that have not landed
        front = MouthFeatures(flat.pop(_FRONT + "mean"), flat.pop(_FRONT + "basis"),
                              int(config["size"]))
        net = TemporalNet(int(config["hidden"]), tuple(config["dilations"]),
                          int(config["kernel"]), float(config["dropout"]),
                          int(config["num_classes"]))
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(path, f"unreadable vsr_self weights ({type(e).__name__}: "
                              f"{e})") from e
    expected = tree_shapes(_init_shapes(net, front.dim))
    expected_front = {"mean": (front.size ** 2,),
                      "basis": (front.size ** 2, int(config["components"]))}
    problems = shape_problems(expected, {k: tuple(v.shape) for k, v in flat.items()})
    problems += [f"{_FRONT}{k} {tuple(getattr(front, k).shape)} != expected {s}"
                 for k, s in expected_front.items() if tuple(getattr(front, k).shape) != s]
    if problems:
        raise CheckpointError(path, "weights do not match the declared network: "
                              + "; ".join(problems))
    return LipReader(front, net, unflatten_params(flat), config["input"]), training


def _init_shapes(net: TemporalNet, dim: int):
    return jax.eval_shape(net.init, jax.random.key(0), jnp.zeros((1, 2, dim)))["params"]


# --- the teacher --------------------------------------------------------------------------

class VsrSelfTeacher:
    """Video-side teacher: ``LipReader`` posteriors over ``alphabet.VISEMES`` from the
    clip's mouth crops; the audio side is uniform (pair it with ``asr_align``).

    ``weights``: the weights file (default ``default_weights_path()``; ``--teacher
    vsr_self:PATH`` sets it). Fails at construction, with the retrain command, when the
    file is missing. Returns None for a clip without mouth crops.
    """
    name = "vsr_self"
    num_classes = alphabet.NUM_VISEMES
    sides = frozenset({"video"})
    needs_audio = False

    def __init__(self, weights: str | os.PathLike | None = None):
        self.weights = (str(pathlib.Path(weights).expanduser()) if weights
                        else str(default_weights_path()))
        self.model, self.training = load_weights(self.weights)
        self.model.params = jax.tree_util.tree_map(np.asarray, self.model.params)

    def __call__(self, *, audio: np.ndarray | None, mouth: np.ndarray | None,
                 num_frames: int, meta: dict) -> tuple[np.ndarray, np.ndarray] | None:
        if mouth is None or np.asarray(mouth).size == 0:
            return None
        clip = posteriors.fit_length(np.asarray(mouth, np.uint8), num_frames)
        return posteriors.uniform(num_frames, self.num_classes), self.model.predict(clip)


if __name__ == "__main__":
    # The documented command (``python -m avdetect.teachers.vsr_self train ...``); the
    # training code lives in vsr_self_train so the teacher loads without it.
    from avdetect.teachers.vsr_self_train import main
    sys.exit(main())
