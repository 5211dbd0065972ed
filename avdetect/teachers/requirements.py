"""Refusing to train what cannot train: a method whose losses read teacher posteriors on a
dataset whose metadata says it has none, or only one side.

Without this check such a run trains on zeros: the correlation target becomes the same
constant for every frame (1 with the default divergence, NaN-prone under the quirks) and
"the loss falls" means nothing. The build records what it stored (``avdetect.data.build``:
metadata ``teacher`` = name, dim K, the ``sides`` the teacher fills and how many ``clips``
got each side); this module compares that with what the config needs.
"""

from __future__ import annotations

from typing import Any, Mapping

from avdetect import contract
from avdetect.errors import ConfigError

BOTH_SIDES = ("audio", "video")      # r_t compares the two sides: a loss needs both
RANDOM_DATA = "random"               # the trainer's synthetic batches carry both sides


def _get(node: Any, key: str, default: Any = None) -> Any:
    if node is None:
        return default
    if isinstance(node, Mapping):
        return node.get(key, default)
    try:
        return node.get(key, default)          # ml_collections.ConfigDict
    except AttributeError:
        return getattr(node, key, default)


def needed_sides(config: Any) -> tuple[str, ...]:
    """The teacher sides the config's losses read: both when the method's batch inputs
    list a teacher stream, unless every teacher-loss weight is 0 (correlation
    distillation with ``loss.w_corr = loss.w_metric = 0`` reads none); else ()."""
    inputs = tuple(_get(_get(config, "data"), "inputs", ()) or ())
    if not any(s in inputs for s in contract.TEACHER_STREAMS):
        return ()
    loss = _get(config, "loss")
    weights = [w for w in ("w_corr", "w_metric") if _get(loss, w) is not None]
    if weights and not any(_get(loss, w) for w in weights):
        return ()
    return BOTH_SIDES


def rebuild_hint(name: str) -> str:
    """The build command to get a dataset with both teacher sides."""
    base = name.split("/", 1)[0]
    if base == "synthetic_av":
        spec = "oracle"
    else:
        spec = "asr_align+vsr_self (or deep_avsr:DIR with converted checkpoints)"
    return f"python -m avdetect.data.build {name} --data_dir DIR --teacher {spec}"


def check_dataset(config: Any, name: str, meta: Mapping[str, Any]) -> None:
    """Raise ConfigError when dataset ``name`` (its metadata ``meta``) lacks a teacher side
    the config's losses need, or stores K classes other than ``model.teacher_classes``."""
    need = needed_sides(config)
    if not need:
        return
    method = _get(config, "method", "this method")
    teacher = dict(meta.get("teacher") or {})
    if not teacher.get("name"):
        raise ConfigError(
            f"method {method!r} trains on teacher posteriors (loss.w_corr / loss.w_metric > "
            f"0) but dataset {name!r} was built without a teacher (it would train on zeros). "
            f"Rebuild it with one: {rebuild_hint(name)}, then train on the dataset that "
            "command prints; or set --config.loss.w_corr=0 --config.loss.w_metric=0")
    sides = teacher.get("sides")
    if sides is None:
        raise ConfigError(f"dataset {name!r} does not record which teacher sides it holds "
                          f"(built before shard format 3): rebuild it: {rebuild_hint(name)}")
    clips = dict(teacher.get("clips") or {})
    missing = [s for s in need if s not in sides or clips.get(s, 1) == 0]
    if missing:
        have = [s for s in sides if clips.get(s, 1) > 0]
        raise ConfigError(
            f"method {method!r} needs both teacher sides but dataset {name!r} (teacher "
            f"{teacher.get('spec') or teacher['name']!r}) has {have or 'none'}: missing "
            f"{missing}. Pair it with a teacher for the missing side: {rebuild_hint(name)}")
    k = _get(_get(config, "model"), "teacher_classes")
    if k is not None and int(k) != int(teacher.get("dim", k)):
        raise ConfigError(f"dataset {name!r} stores K = {teacher['dim']} teacher classes "
                          f"but config.model.teacher_classes = {k}: pass "
                          f"--config.model.teacher_classes={teacher['dim']}")


def bind_and_check(config: Any, name: str, meta: Mapping[str, Any]) -> None:
    """Set ``config.model.teacher_classes`` to the K dataset ``name`` stores (when it has a
    teacher), then :func:`check_dataset`. Mutates ``config`` (an existing field, so a
    locked ConfigDict accepts it)."""
    teacher = meta.get("teacher") or {}
    model = _get(config, "model")
    if teacher.get("name") and teacher.get("dim") and model is not None:
        model.teacher_classes = int(teacher["dim"])
    check_dataset(config, name, meta)


def check_training_data(config: Any) -> None:
    """:func:`bind_and_check` for the dataset a training config reads, when its losses
    read teacher posteriors (nothing to do for the trainer's random data)."""
    data = _get(config, "data")
    name = _get(data, "name")
    if not needed_sides(config) or not name or name == RANDOM_DATA:
        return
    from avdetect.data.metadata import dataset_metadata
    bind_and_check(config, name, dataset_metadata(name, _get(data, "data_dir")))
