"""Device mesh, parameter sharding rules and global batches.

Three jobs, each a small pure function:

* ``make_mesh(config.mesh)`` turns ``[('data', -1), ('model', 1)]`` into a
  ``jax.sharding.Mesh`` over every device of every process (``-1`` = "the rest").
* ``infer_shardings(tree, config.sharding_strategy, mesh)`` maps every leaf of a state
  tree to a ``NamedSharding`` by the first rule whose regex matches the leaf's path
  (``params/visual/conv1/kernel``, ``opt_state/1/0/mu/visual/conv1/kernel``, ...).
  Rules (strings, big_vision style):

  - ``replicate``                    the whole array on every device;
  - ``shard_dim(DIM, AXIS)``         dimension DIM (negative counts from the end)
                                     split over mesh axis AXIS (default ``'model'``);
                                     the size must divide, else a ConfigError;
  - ``fsdp(AXIS)``                   the largest dimension divisible by the axis
                                     size split over AXIS (default ``'data'``);
                                     replicated when none divides.

  Leaves no rule matches, and scalars, are replicated. Because optimizer moments carry
  their parameter's path as a suffix, a rule written for a parameter also places its
  Adam ``mu``/``nu`` the same way (regexes are searched, not fully matched).
* ``host_to_global(local_batch, mesh)`` assembles each process's slice of the batch
  into one global ``jax.Array`` sharded over the data axis (the same call on one host
  and on many).
"""

from __future__ import annotations

import ast
import dataclasses
import math
import re
from typing import Any, Iterable, Mapping, Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from avdetect.errors import ConfigError

DATA_AXIS = "data"
MODEL_AXIS = "model"


# ----------------------------------------------------------------------------------
# Mesh
# ----------------------------------------------------------------------------------

def mesh_shape(mesh_spec: Sequence[tuple[str, int]], num_devices: int) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """Axis names and sizes for ``mesh_spec`` over ``num_devices`` devices.

    At most one size may be -1 (it takes whatever is left); the product must equal the
    device count. Raises ConfigError naming ``config.mesh`` otherwise.
    """
    spec = [(str(name), int(size)) for name, size in mesh_spec]
    names = tuple(n for n, _ in spec)
    if not spec:
        raise ConfigError("config.mesh: empty; expected e.g. [('data', -1), ('model', 1)]")
    if len(set(names)) != len(names):
        raise ConfigError(f"config.mesh: repeated axis name in {names}")
    if DATA_AXIS not in names:
        raise ConfigError(f"config.mesh: needs a '{DATA_AXIS}' axis (batch dimension); got {names}")
    fill = [i for i, (_, s) in enumerate(spec) if s == -1]
    if len(fill) > 1:
        raise ConfigError(f"config.mesh: at most one axis may be -1; got {spec}")
    if any(s == 0 or s < -1 for _, s in spec):
        raise ConfigError(f"config.mesh: sizes must be positive or -1; got {spec}")
    known = math.prod(s for _, s in spec if s != -1)
    sizes = [s for _, s in spec]
    if fill:
        if num_devices % known:
            raise ConfigError(f"config.mesh: {spec} does not divide {num_devices} devices")
        sizes[fill[0]] = num_devices // known
    if math.prod(sizes) != num_devices:
        raise ConfigError(f"config.mesh: {spec} needs {math.prod(sizes)} devices, "
                          f"{num_devices} are available")
    return names, tuple(sizes)


def make_mesh(mesh_spec: Sequence[tuple[str, int]], devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A mesh over all (global) devices from ``config.mesh``.

    ``jax.make_mesh`` orders devices so that each process owns a contiguous block of the
    data axis, which is what ``jax.make_array_from_process_local_data`` needs. Axes are
    ``Auto`` (classic jit sharding propagation), not the Explicit default of new jax.
    """
    devices = list(devices) if devices is not None else jax.devices()
    names, sizes = mesh_shape(mesh_spec, len(devices))
    return jax.make_mesh(sizes, names, axis_types=(AxisType.Auto,) * len(names), devices=devices)


# ----------------------------------------------------------------------------------
# Sharding rules
# ----------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Rule:
    """One parsed sharding rule: ``kind`` in {replicate, shard_dim, fsdp}."""
    kind: str
    dim: int | None = None
    axis: str | None = None


def parse_rule(text: str) -> Rule:
    """Parse ``'replicate'``, ``'shard_dim(-1, "model")'`` or ``'fsdp("data")'``."""
    m = re.fullmatch(r"\s*(\w+)\s*(?:\((.*)\))?\s*", text)
    if not m:
        raise ConfigError(f"config.sharding_strategy: cannot parse rule {text!r}")
    kind, arg_text = m.group(1), m.group(2)
    try:
        args = ast.literal_eval(f"({arg_text},)") if arg_text and arg_text.strip() else ()
    except (ValueError, SyntaxError) as e:
        raise ConfigError(f"config.sharding_strategy: bad arguments in rule {text!r}: {e}") from None
    if kind == "replicate" and not args:
        return Rule("replicate")
    if kind == "shard_dim" and 1 <= len(args) <= 2 and isinstance(args[0], int):
        axis = args[1] if len(args) == 2 else MODEL_AXIS
        return Rule("shard_dim", dim=args[0], axis=str(axis))
    if kind == "fsdp" and len(args) <= 1:
        return Rule("fsdp", axis=str(args[0]) if args else DATA_AXIS)
    raise ConfigError(f"config.sharding_strategy: unknown rule {text!r} (use replicate, "
                      "shard_dim(DIM, AXIS) or fsdp(AXIS))")


def path_str(path: Sequence[Any]) -> str:
    """'/'-joined readable key path: ``params/visual/Conv_0/kernel``."""
    parts = []
    for k in path:
        if isinstance(k, jax.tree_util.DictKey):
            parts.append(str(k.key))
        elif isinstance(k, jax.tree_util.GetAttrKey):
            parts.append(k.name)
        elif isinstance(k, jax.tree_util.SequenceKey):
            parts.append(str(k.idx))
        else:
            parts.append(str(k))
    return "/".join(parts)


def spec_for(path: str, shape: Sequence[int], rule: Rule, mesh: Mesh) -> P:
    """PartitionSpec placing an array of ``shape`` at ``path`` by ``rule``."""
    if rule.kind == "replicate" or len(shape) == 0:
        return P()
    if rule.axis not in mesh.shape:
        raise ConfigError(f"config.sharding_strategy: rule for {path} names mesh axis "
                          f"{rule.axis!r}; the mesh has {tuple(mesh.shape)}")
    n = mesh.shape[rule.axis]
    if rule.kind == "shard_dim":
        dim = rule.dim if rule.dim >= 0 else len(shape) + rule.dim
        if not 0 <= dim < len(shape):
            raise ConfigError(f"config.sharding_strategy: {path} has shape {tuple(shape)}, "
                              f"no dimension {rule.dim}")
        if shape[dim] % n:
            raise ConfigError(f"config.sharding_strategy: {path} dimension {dim} of size "
                              f"{shape[dim]} is not divisible by mesh axis {rule.axis}={n}")
        spec = [None] * len(shape)
        spec[dim] = rule.axis
        return P(*spec)
    # fsdp: the largest divisible dimension (ties -> the last one), else replicate.
    order = sorted(range(len(shape)), key=lambda d: (shape[d], d), reverse=True)
    for d in order:
        if shape[d] % n == 0 and shape[d] >= n:
            spec = [None] * len(shape)
            spec[d] = rule.axis
            return P(*spec)
    return P()


def infer_shardings(tree: Any, strategy: Iterable[tuple[str, str]], mesh: Mesh) -> Any:
    """A NamedSharding for every leaf of ``tree`` (arrays or ShapeDtypeStructs).

    ``strategy`` is ``config.sharding_strategy``: ``[(regex, rule), ...]``; the first
    regex that ``re.search``-es the leaf path wins; unmatched leaves are replicated.
    """
    compiled = []
    for item in strategy:
        if len(item) != 2:
            raise ConfigError(f"config.sharding_strategy: expected (regex, rule) pairs, got {item!r}")
        pattern, rule = item
        try:
            compiled.append((re.compile(pattern), parse_rule(rule)))
        except re.error as e:
            raise ConfigError(f"config.sharding_strategy: bad regex {pattern!r}: {e}") from None

    def one(path, leaf):
        name = path_str(path)
        shape = tuple(np.shape(leaf))
        for regex, rule in compiled:
            if regex.search(name):
                return NamedSharding(mesh, spec_for(name, shape, rule, mesh))
        return NamedSharding(mesh, P())

    return jax.tree_util.tree_map_with_path(one, tree)


def replicated(mesh: Mesh) -> NamedSharding:
    """The sharding of an array held whole on every device."""
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) dimension split over the data axis, the rest whole."""
    return NamedSharding(mesh, P(DATA_AXIS))


# ----------------------------------------------------------------------------------
# Host-local batches -> global arrays
# ----------------------------------------------------------------------------------

def is_device_field(value: Any) -> bool:
    """Numeric/bool arrays go to devices; strings, bytes and objects stay on the host."""
    return np.asarray(value).dtype.kind in "biuf"


def host_to_global(local_batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Global arrays from this process's part of the batch (numeric fields only).

    Every process passes its own ``[B_local, ...]`` slice (processes in
    ``jax.process_index()`` order own consecutive rows); the result has leading size
    ``B_local * process_count``, sharded over the data axis. With one process this is a
    plain sharded ``device_put``.
    """
    sharding = batch_sharding(mesh)
    out = {}
    for key, value in local_batch.items():
        if not is_device_field(value):
            continue
        value = np.asarray(value)
        out[key] = jax.make_array_from_process_local_data(sharding, value)
    return out
