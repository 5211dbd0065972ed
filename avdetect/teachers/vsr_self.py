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

which runs ``asr_align`` and the face tracker over the real clips once (cached in
``~/.cache/avdetect/vsr_self_data``), trains, then prints the per-frame agreement with the
audio teacher on the validation and test identities next to chance; ``evaluate`` also
prints the correlation target r_t of real pairs against audio shifted or swapped.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import logging
import os
import pathlib
import sys
import time
from typing import Any, Iterable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from avdetect.errors import ConfigError, FileMissingError
from avdetect.teachers import alphabet, posteriors
from avdetect.teachers.errors import CheckpointError

log = logging.getLogger(__name__)

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
            net.apply({"params": p}, x, m), axis=-1))
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


# --- training data ------------------------------------------------------------------------

@dataclasses.dataclass
class Clip:
    """One real clip's training pair: mouth crops and the audio teacher's posteriors."""
    file: str
    identity: str
    split: str
    mouth: np.ndarray            # uint8 [T, 88, 88]
    target: np.ndarray           # float32 [T, K], rows sum to 1


def read_manifest(data_dir) -> list[dict[str, str]]:
    """Rows (file, label, identity, ...) of ``data_dir/manifest.csv`` (the realtalk /
    videofolder layout); a clear error naming the file when it is missing or lacks
    columns."""
    path = pathlib.Path(data_dir) / "manifest.csv"
    if not path.is_file():
        raise FileMissingError(path, "vsr_self trains on a folder of clips with a "
                               "manifest.csv (file,label,identity,...), e.g. ../shared/realtalk")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    missing = {"file", "label", "identity"} - set(rows[0] if rows else {})
    if missing:
        raise ConfigError(f"{path}: missing columns {sorted(missing)}")
    return rows


def prepare(data_dir, cache_dir=None, *, splits: Iterable[str] = ("train", "validation", "test"),
            limit: int | None = None, progress: bool = True,
            teacher: Any = None) -> list[Clip]:
    """The real clips of ``data_dir`` in ``splits`` (identity-disjoint, by
    ``avdetect.data.splits.split_of``) with mouth crops (``preprocess_video``) and
    ``asr_align`` posteriors, each computed once and cached as ``cache_dir/<file>.npz``.
    Clips the tracker or the aligner cannot use are skipped with a log line (and the
    reason kept as ``<file>.skipped``, so later runs do not retry them). The cache is
    keyed by file name: clear it when the clips or asr_align change."""
    from tqdm import tqdm

    from avdetect.data.splits import split_of
    from avdetect.errors import MediaError
    from avdetect.media import decode
    from avdetect.preprocess.pipeline import preprocess_video

    data_dir = pathlib.Path(data_dir)
    cache = pathlib.Path(cache_dir) if cache_dir else default_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    splits = tuple(splits)
    rows = [r for r in read_manifest(data_dir)
            if r["label"] == "real" and split_of(r["identity"]) in splits]
    rows = rows[:limit] if limit else rows
    out: list[Clip] = []
    for row in tqdm(rows, desc="vsr_self data", unit="clip", disable=not progress):
        split = split_of(row["identity"])
        target = cache / (pathlib.Path(row["file"]).stem + ".npz")
        skipped = target.with_suffix(".skipped")     # a clip that failed once: the reason
        if skipped.is_file():
            log.info("vsr_self: skipping %s: %s", row["file"], skipped.read_text().strip())
            continue
        if not target.is_file():
            try:
                feats = preprocess_video(data_dir / row["file"], face_size=16)
                t = feats.mouth.shape[0]
                if teacher is None:
                    from avdetect.teachers.asr_align import AsrAlignTeacher
                    teacher = AsrAlignTeacher()
                audio = decode.load_audio(data_dir / row["file"], num_frames=t)
                post = teacher(audio=audio, mouth=None, num_frames=t, meta=dict(row))
            except MediaError as e:
                log.warning("vsr_self: skipping %s: %s", row["file"], e)
                skipped.write_text(f"{e}\n")
                continue
            if post is None:
                log.warning("vsr_self: skipping %s: the audio teacher gave nothing", row["file"])
                skipped.write_text("the audio teacher gave nothing\n")
                continue
            tmp = target.with_name(target.stem + ".tmp.npz")
            np.savez(tmp, mouth=feats.mouth, target=post[0].astype(np.float32))
            os.replace(tmp, target)
        with np.load(target, allow_pickle=False) as z:
            out.append(Clip(row["file"], row["identity"], split, z["mouth"], z["target"]))
    return out


# --- training -----------------------------------------------------------------------------

@dataclasses.dataclass
class TrainConfig:
    steps: int = 600
    batch: int = 32
    window: int = 48
    lr: float = 2e-3
    weight_decay: float = 1e-2
    seed: int = 0
    augment: bool = True
    components: int = 0         # eigenlip coefficients (0: motion only; see METHODS.md)
    size: int = 32
    hidden: int = 16
    dilations: tuple[int, ...] = (1, 2, 4)
    dropout: float = 0.0


def soft_cross_entropy(logits: jax.Array, target: jax.Array,
                       mask: jax.Array | None = None) -> jax.Array:
    """Mean over (valid) frames of -sum_c target_c log softmax(logits)_c."""
    ce = -jnp.sum(target * jax.nn.log_softmax(logits, axis=-1), axis=-1)
    if mask is None:
        return jnp.mean(ce)
    m = mask.astype(ce.dtype)
    return jnp.sum(ce * m) / jnp.maximum(jnp.sum(m), 1.0)


# Augmented views of a training clip: horizontal flip x shifts (pixels of the 88 px crop,
# edge-padded). A whole clip gets one view, so per-clip normalisation stays consistent.
_VIEWS = [(flip, dy, dx) for flip in (False, True)
          for dy, dx in ((0, 0), (-4, 0), (4, 0), (0, -4), (0, 4))]


def _view(mouth: np.ndarray, flip: bool, dy: int, dx: int) -> np.ndarray:
    if flip:
        mouth = mouth[:, :, ::-1]
    if dy or dx:
        p = max(abs(dy), abs(dx))
        padded = np.pad(mouth, ((0, 0), (p, p), (p, p)), mode="edge")
        h, w = mouth.shape[1:]
        mouth = padded[:, p + dy:p + dy + h, p + dx:p + dx + w]
    return mouth


class _Windows:
    """Random training windows of per-frame features (computed once per clip and view)."""

    def __init__(self, clips: Sequence[Clip], front: MouthFeatures, cfg: TrainConfig):
        self.clips, self.front, self.cfg = clips, front, cfg
        self.rng = np.random.default_rng(cfg.seed)
        lengths = np.array([c.mouth.shape[0] for c in clips], np.float64)
        self.p = lengths / lengths.sum()
        self.cache: dict[tuple[int, int], np.ndarray] = {}

    def features(self, i: int, view: int) -> np.ndarray:
        if (i, view) not in self.cache:
            self.cache[(i, view)] = self.front(_view(self.clips[i].mouth, *_VIEWS[view]))
        return self.cache[(i, view)]

    def batch(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        cfg, w = self.cfg, self.cfg.window
        x = np.zeros((cfg.batch, w, self.front.dim), np.float32)
        y = np.zeros((cfg.batch, w, alphabet.NUM_VISEMES), np.float32)
        mask = np.zeros((cfg.batch, w), bool)
        for b, i in enumerate(self.rng.choice(len(self.clips), size=cfg.batch, p=self.p)):
            view = int(self.rng.integers(len(_VIEWS))) if cfg.augment else 0
            f, target = self.features(i, view), self.clips[i].target
            s = int(self.rng.integers(0, max(f.shape[0] - w, 0) + 1))
            n = min(w, f.shape[0] - s)
            x[b, :n], y[b, :n], mask[b, :n] = f[s:s + n], target[s:s + n], True
        return x, y, mask


def train(clips: Sequence[Clip], cfg: TrainConfig = TrainConfig(), progress: bool = True,
          log_every: int = 50) -> tuple[LipReader, list[float]]:
    """Distil the audio teacher into a ``LipReader`` on ``clips``: fit the front end's
    principal axes on them, then train the temporal net. Returns the model and the loss
    history (the mean over each ``log_every`` steps)."""
    import optax
    from tqdm import tqdm

    if not clips:
        raise ConfigError("vsr_self: no training clips (did every clip fail to preprocess?)")
    front = MouthFeatures.fit([c.mouth for c in clips], cfg.components, cfg.size)
    net = TemporalNet(cfg.hidden, tuple(cfg.dilations), dropout=cfg.dropout)
    windows = _Windows(clips, front, cfg)
    key = jax.random.key(cfg.seed)
    params = net.init(key, jnp.zeros((1, cfg.window, front.dim)))["params"]
    sched = optax.warmup_cosine_decay_schedule(0.0, cfg.lr, min(100, cfg.steps // 10 + 1),
                                               cfg.steps, cfg.lr * 0.02)
    opt = optax.adamw(sched, weight_decay=cfg.weight_decay)
    opt_state = opt.init(params)

    @jax.jit
    def step(params, opt_state, x, y, mask, k):
        def loss_fn(p):
            logits = net.apply({"params": p}, x, mask, train=True, rngs={"dropout": k})
            return soft_cross_entropy(logits, y, mask)
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    history, running = [], []
    bar = tqdm(range(cfg.steps), desc="vsr_self train", unit="step", disable=not progress)
    for i in bar:
        x, y, mask = windows.batch()
        params, opt_state, loss = step(params, opt_state, jnp.asarray(x), jnp.asarray(y),
                                       jnp.asarray(mask), jax.random.fold_in(key, i))
        running.append(float(loss))
        if len(running) == log_every or i == cfg.steps - 1:
            history.append(float(np.mean(running)))
            bar.set_postfix(loss=f"{history[-1]:.3f}")
            running = []
    return LipReader(front, net, params), history


# --- agreement with the audio teacher -----------------------------------------------------

def _kl(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """KL(p || q) per row (natural log); q is clamped at 1e-12 so no row is infinite."""
    p = np.asarray(p, np.float64)
    q = np.maximum(np.asarray(q, np.float64), 1e-12)
    return np.sum(np.where(p > 0, p * (np.log(np.maximum(p, 1e-300)) - np.log(q)), 0.0), axis=1)


def agreement(predicted: Sequence[np.ndarray], targets: Sequence[np.ndarray],
              prior: np.ndarray) -> dict[str, float]:
    """Per-frame agreement of predicted posteriors with the audio teacher's over all
    frames of the given clips: top-1 agreement and mean KL(teacher || predicted), next to
    the prior baseline (predict ``prior``, the train frames' mean teacher posterior, for
    every frame: its top-1 is the majority class)."""
    p = np.concatenate(targets)
    q = np.concatenate(predicted)
    top = np.argmax(p, axis=1)
    return {"clips": len(targets), "frames": int(p.shape[0]),
            "top1": float(np.mean(np.argmax(q, axis=1) == top)),
            "kl": float(np.mean(_kl(p, q))),
            "chance_top1": float(np.mean(top == int(np.argmax(prior)))),
            "chance_kl": float(np.mean(_kl(p, np.broadcast_to(prior, p.shape))))}


def evaluate(model: LipReader, clips: Sequence[Clip], prior: np.ndarray) -> dict[str, float]:
    preds = [model.predict(c.mouth) for c in clips]
    return agreement(preds, [c.target for c in clips], prior)


def teacher_prior(clips: Sequence[Clip]) -> np.ndarray:
    """Mean audio-teacher posterior over all frames of ``clips`` (the chance predictor)."""
    return np.concatenate([c.target for c in clips]).mean(axis=0)


def correlation_check(model: LipReader, clips: Sequence[Clip], shift: int = 8
                      ) -> dict[str, Any]:
    """Does the pair (asr_align audio side, this video side) carry a sync signal? The
    correlation target r_t (``losses.teacher_soft_label``, default form) of each real
    clip with its own audio side, against the same clip with the audio side rolled by
    ``shift`` frames and with another clip's audio side (the next clip in the list):
    mean r_t over frames, its spread on the real pairs, and in how many clips the real
    pair's mean r_t is the higher (paired)."""
    import jax.numpy as jnp

    from avdetect.losses import teacher_soft_label

    def r(p, q):
        return np.asarray(teacher_soft_label(jnp.asarray(p)[None], jnp.asarray(q)[None]))[0]

    qs = [model.predict(c.mouth) for c in clips]
    real = [r(c.target, q) for c, q in zip(clips, qs)]
    out: dict[str, Any] = {"clips": len(clips), "frames": int(sum(len(x) for x in real))}
    allr = np.concatenate(real)
    out["real"] = {"mean": float(allr.mean()), "std": float(allr.std()),
                   "p10_p50_p90": [float(x) for x in np.percentile(allr, [10, 50, 90])]}
    others = {
        f"shift{shift}": [r(np.roll(c.target, shift, axis=0), q) for c, q in zip(clips, qs)],
        "swap": [r(posteriors.fit_length(clips[(i + 1) % len(clips)].target, len(q)), q)
                 for i, q in enumerate(qs)]}
    for name, rs in others.items():
        wins = sum(a.mean() > b.mean() for a, b in zip(real, rs))
        out[name] = {"mean": float(np.concatenate(rs).mean()), "real_higher_in": int(wins)}
    return out


# --- command line -------------------------------------------------------------------------

def _describe(clips: Sequence[Clip]) -> dict[str, Any]:
    return {"clips": len(clips), "frames": int(sum(c.mouth.shape[0] for c in clips)),
            "identities": len({c.identity for c in clips})}


def _cmd_train(args) -> int:
    clips = prepare(args.data_dir, args.cache_dir, limit=args.limit)
    by_split = {s: [c for c in clips if c.split == s] for s in ("train", "validation", "test")}
    for s, cs in by_split.items():
        print(f"{s}: {_describe(cs)}")
    cfg = TrainConfig(steps=args.steps, seed=args.seed, components=args.components,
                      hidden=args.hidden, dropout=args.dropout)
    t0 = time.time()
    model, history = train(by_split["train"], cfg)
    seconds = time.time() - t0
    prior = teacher_prior(by_split["train"])
    held_out = {s: evaluate(model, by_split[s], prior)
                for s in ("validation", "test") if by_split[s]}
    for s, m in held_out.items():
        print(f"{s}: agreement with asr_align over {m['clips']} clips / {m['frames']} frames: "
              f"top-1 {m['top1']:.3f} (chance {m['chance_top1']:.3f}), mean KL "
              f"{m['kl']:.3f} (prior {m['chance_kl']:.3f})")
    from avdetect.data.splits import DEFAULT_SALT, RULE
    training = {
        "data": f"real clips of {os.path.abspath(args.data_dir)} (manifest.csv), split by "
                f"identity: {RULE}, salt {DEFAULT_SALT!r}",
        "train": _describe(by_split["train"]), "audio_teacher": "asr_align (defaults)",
        "config": dataclasses.asdict(cfg), "loss_history": history,
        "train_seconds": round(seconds, 1), "held_out": held_out,
        "command": " ".join(["python -m avdetect.teachers.vsr_self"] + sys.argv[1:]),
    }
    out = save_weights(args.out or default_weights_path(), model, training)
    print(f"wrote {out}")
    return 0


def _cmd_evaluate(args) -> int:
    model, _ = load_weights(args.weights or default_weights_path())
    clips = prepare(args.data_dir, args.cache_dir, limit=args.limit)
    prior = teacher_prior([c for c in clips if c.split == "train"])
    for s in args.splits:
        held = [c for c in clips if c.split == s]
        print(f"{s}: agreement {json.dumps(evaluate(model, held, prior))}")
        print(f"{s}: r_t real vs audio moved {json.dumps(correlation_check(model, held))}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m avdetect.teachers.vsr_self",
                                     description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("train", "evaluate"):
        p = sub.add_parser(name)
        p.add_argument("--data_dir", required=True,
                       help="folder of clips with manifest.csv (e.g. ../shared/realtalk)")
        p.add_argument("--cache_dir", default=None,
                       help=f"mouth crops + asr_align posteriors (default {default_cache_dir()})")
        p.add_argument("--limit", type=int, default=None, help="first N real clips only")
        if name == "train":
            p.add_argument("--out", default=None, help=f"weights file (default "
                           f"{default_weights_path()})")
            p.add_argument("--steps", type=int, default=TrainConfig.steps)
            p.add_argument("--components", type=int, default=TrainConfig.components,
                           help="eigenlip coefficients per frame besides the 3 motion ones")
            p.add_argument("--hidden", type=int, default=TrainConfig.hidden)
            p.add_argument("--dropout", type=float, default=TrainConfig.dropout)
            p.add_argument("--seed", type=int, default=0)
        else:
            p.add_argument("--weights", default=None)
            p.add_argument("--splits", nargs="+", default=["validation", "test"])
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    return _cmd_train(args) if args.command == "train" else _cmd_evaluate(args)


if __name__ == "__main__":
    sys.exit(main())
