"""Optimizer and learning-rate schedule from ``config.optim``.

``config.optim`` fields (defaults in brackets):
  name          'adam' | 'adamw' | 'sgd'                ['adam']
  lr            peak learning rate                       [1e-3]
  schedule      'constant' | 'step' | 'cosine'           ['constant']
  decay_rate    'step': factor per ``decay_steps``       [0.95]
  decay_steps   'step': steps per decay                  [1000]
  warmup_steps  linear warm-up from 0 to ``lr``          [0]
  weight_decay  'adamw' decoupled decay, applied to parameters with ndim >= 2 only
                (kernels; biases and norm scales are not decayed, the usual practice) [0.0]
  grad_clip     clip by global norm of the *trainable* gradients; 0/None = off  [None]
  momentum      'sgd' only                               [0.9]
  b1, b2, eps   Adam moments                             [0.9, 0.999, 1e-8]

Frozen parameters (``Method.trainable_mask`` is False) go through ``optax.set_to_zero``:
their update is exactly zero, they get no optimizer state, and they do not count in the
clipping norm.
"""

from __future__ import annotations

from typing import Any

import jax
import optax

from avdetect.errors import ConfigError

TRAIN, FROZEN = "trainable", "frozen"


def make_schedule(optim_cfg: Any, total_steps: int) -> optax.Schedule:
    """Learning rate as a function of the step: warm-up, then the named schedule."""
    lr = float(optim_cfg.get("lr", 1e-3))
    warmup = int(optim_cfg.get("warmup_steps", 0) or 0)
    kind = optim_cfg.get("schedule", "constant") or "constant"
    if kind == "constant":
        main = optax.constant_schedule(lr)
    elif kind == "step":
        main = optax.exponential_decay(lr, transition_steps=int(optim_cfg.get("decay_steps", 1000)),
                                       decay_rate=float(optim_cfg.get("decay_rate", 0.95)),
                                       staircase=True)
    elif kind == "cosine":
        main = optax.cosine_decay_schedule(lr, decay_steps=max(1, total_steps - warmup))
    else:
        raise ConfigError(f"config.optim.schedule: unknown {kind!r} (constant, step, cosine)")
    if warmup <= 0:
        return main
    return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), main], [warmup])


def _decay_mask(params: Any) -> Any:
    # Kernels decay; biases, norm scales/offsets (ndim < 2) do not.
    return jax.tree.map(lambda p: p.ndim >= 2, params)


def make_optimizer(optim_cfg: Any, total_steps: int, trainable_mask: Any = None
                   ) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """``(tx, schedule)``; ``trainable_mask`` is a bool pytree like params (or None)."""
    schedule = make_schedule(optim_cfg, total_steps)
    name = optim_cfg.get("name", "adam")
    b1, b2 = float(optim_cfg.get("b1", 0.9)), float(optim_cfg.get("b2", 0.999))
    eps = float(optim_cfg.get("eps", 1e-8))
    if name == "adam":
        base = optax.adam(schedule, b1=b1, b2=b2, eps=eps)
    elif name == "adamw":
        base = optax.adamw(schedule, b1=b1, b2=b2, eps=eps,
                           weight_decay=float(optim_cfg.get("weight_decay", 0.0) or 0.0),
                           mask=_decay_mask)
    elif name == "sgd":
        base = optax.sgd(schedule, momentum=float(optim_cfg.get("momentum", 0.9)))
    else:
        raise ConfigError(f"config.optim.name: unknown {name!r} (adam, adamw, sgd)")
    clip = optim_cfg.get("grad_clip", None)
    tx = optax.chain(optax.clip_by_global_norm(float(clip)), base) if clip else base
    if trainable_mask is None:
        return tx, schedule
    labels = jax.tree.map(lambda t: TRAIN if t else FROZEN, trainable_mask)
    return optax.multi_transform({TRAIN: tx, FROZEN: optax.set_to_zero()}, labels), schedule
