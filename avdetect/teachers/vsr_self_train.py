"""Training and evaluating the ``vsr_self`` lip-reading teacher (the model, its weights
file and the teacher itself: :mod:`avdetect.teachers.vsr_self`).

``prepare`` turns the real clips of a folder with a manifest into training pairs (mouth
crops, ``asr_align`` posteriors; cached), ``train`` distils the audio teacher into a
``LipReader``, ``agreement`` / ``correlation_check`` measure the result on held-out
identities, and ``main`` is the command line, run as
``python -m avdetect.teachers.vsr_self train|evaluate ...`` (that module hands its command
line to this one).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import functools
import json
import logging
import os
import pathlib
import sys
import time
from typing import Any, Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from avdetect import cpu_compile
from avdetect.errors import ConfigError, FileMissingError
from avdetect.teachers import alphabet, posteriors
from avdetect.teachers.vsr_self import (LipReader, MouthFeatures, TemporalNet,
                                        default_cache_dir, default_weights_path, load_weights,
                                        save_weights)

log = logging.getLogger(__name__)


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

    @functools.partial(jax.jit, compiler_options=cpu_compile.train_step())
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

