"""Sharding rules: how every array of a run is laid out on the ("data", "fsdp", "tensor") mesh, in one place.

Each array dimension has a *logical* axis name: the model declares its own (`models.axes`: `PARAM_AXES`,
`KV_CACHE_AXES`, `ACTIVATION_AXES`), rows of data are `ROWS_AXES`. A rule set maps logical names to mesh axes
(`TRAIN_RULES`, `SAMPLE_RULES`); `TRAIN_LAYOUT` hands the rules to the model for the hints it gives inside jit. The layout is Megatron tensor parallelism (q/k/v and
gate/up split by output, o/down by input, vocab split over `tensor`) combined with ZeRO-3 style FSDP (the other
matrix dimension split over `fsdp`) and data parallelism over `("data", "fsdp")` for rows.

A dimension that does not split evenly (e.g. 2 kv heads over tensor=4, or 6 rows over data×fsdp=8) falls back to
fewer mesh axes, down to replication, and says so in a debug log; heads are never split inside a head.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from typing import Any, Mapping, Sequence

import jax
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from prorl_jax.models.axes import KV_CACHE_AXES, PARAM_AXES, head_units
from prorl_jax.models.config import Qwen2Config
from prorl_jax.parallel.mesh import BATCH_AXES

_log = logging.getLogger(__name__)

# Logical axis -> mesh axes, for the training step: params, grads and optimizer state split over fsdp × tensor.
TRAIN_RULES: Mapping[str, tuple[str, ...]] = {
    "batch": BATCH_AXES,
    "vocab": ("tensor",),
    "embed": ("fsdp",),
    "heads": ("tensor",),
    "kv_heads": ("tensor",),
    "mlp": ("tensor",),
}
# For rollouts: params only split over tensor. With fsdp every decode step would all-gather the whole model
# to produce one token per row; replicas cost memory but no per-token traffic.
SAMPLE_RULES: Mapping[str, tuple[str, ...]] = dict(TRAIN_RULES, embed=())

ROWS_AXES = ("batch",)  # dim 0 of anything per row: train batches [B, T], rollout buffers [B, N], lengths [B]


class MissingRuleError(KeyError):
  """A parameter path with no entry in `PARAM_AXES`."""

  def __str__(self) -> str:
    return str(self.args[0])


def _canonical(path: Sequence[Any]) -> str:
  parts = [str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path]
  return re.sub(r"^layers_\d+/", "layers/", "/".join(parts))


def spec_for(shape: Sequence[int], logical: Sequence[str | None], mesh: Mesh, rules: Mapping[str, Sequence[str]],
             units: Mapping[str, int] | None = None, name: str = "array") -> P:
  """The PartitionSpec of an array of `shape` whose dims have logical axes `logical`.

  A logical axis maps to those mesh axes of `rules[axis]` that `mesh` has with more than one device. A dim of
  `shape[i]` elements made of whole `units[axis]`-element blocks (e.g. heads of head_dim) is split only between
  blocks; when the block count does not divide by the axes' total size, trailing axes are dropped until it does
  (down to replicating the dim), with a debug log. A mesh axis is used by one dim at most.
  """
  if len(shape) != len(logical):
    raise ValueError(f"{name}: shape {tuple(shape)} has {len(shape)} dims but its rule {tuple(logical)} has "
                     f"{len(logical)}")
  units = units or {}
  used: set[str] = set()
  spec = []
  for dim, axis in zip(shape, logical):
    wanted = [a for a in rules.get(axis, ()) if mesh.shape.get(a, 1) > 1 and a not in used] if axis else []
    unit = units.get(axis, 1)
    blocks = dim // unit if dim % unit == 0 else 1
    axes = list(wanted)
    while axes and blocks % _prod(mesh, axes):
      axes.pop()
    if axes != wanted:
      _log.debug("%s: dim %s (%d) does not split over %s; using %s", name, axis, dim, wanted, axes or "replication")
    used.update(axes)
    spec.append(None if not axes else axes[0] if len(axes) == 1 else tuple(axes))
  while spec and spec[-1] is None:
    spec.pop()
  return P(*spec)


def _prod(mesh: Mesh, axes: Sequence[str]) -> int:
  size = 1
  for a in axes:
    size *= int(mesh.shape[a])
  return size


def param_specs(config: Qwen2Config, params: Any, mesh: Mesh, *, mode: str = "train") -> Any:
  """PartitionSpecs (same tree as `params`, arrays or ShapeDtypeStructs) from `PARAM_AXES`.

  mode: "train" (`TRAIN_RULES`: fsdp × tensor) or "sample" (`SAMPLE_RULES`: tensor only).
  Raises MissingRuleError for a parameter path without a rule.
  """
  if mode not in ("train", "sample"):
    raise ValueError(f"mode must be 'train' or 'sample', got {mode!r}")
  rules = TRAIN_RULES if mode == "train" else SAMPLE_RULES

  def one(path, leaf):
    key = _canonical(path)
    if key not in PARAM_AXES:
      raise MissingRuleError(f"no sharding rule for parameter {key!r} (shape {tuple(leaf.shape)}); add it to "
                             "PARAM_AXES in prorl_jax/models/axes.py with one logical axis per dim")
    return spec_for(leaf.shape, PARAM_AXES[key], mesh, rules, head_units(config), name=key)

  return jax.tree_util.tree_map_with_path(one, params)


def named(mesh: Mesh, specs: Any) -> Any:
  """NamedShardings for a tree of PartitionSpecs."""
  return jax.tree.map(lambda s: NamedSharding(mesh, s), specs, is_leaf=lambda x: isinstance(x, P))


def param_shardings(config: Qwen2Config, params: Any, mesh: Mesh, *, mode: str = "train") -> Any:
  """NamedShardings for every parameter (see `param_specs`)."""
  return named(mesh, param_specs(config, params, mesh, mode=mode))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def opt_state_shardings(optimizer: optax.GradientTransformation, opt_state: Any, params_sharding: Any,
                        mesh: Mesh) -> Any:
  """Optimizer-state shardings: params-shaped parts (Adam mu, nu) as the params, everything else (step counts,
  schedule state) replicated. `opt_state` may be abstract (`jax.eval_shape(optimizer.init, params)`)."""
  is_sharding = lambda x: isinstance(x, NamedSharding)
  return optax.tree_map_params(optimizer, lambda _, s: s, opt_state, params_sharding,
                               transform_non_params=lambda _: replicated(mesh), is_leaf=is_sharding)


def train_state_shardings(config: Qwen2Config, state: Any, optimizer: optax.GradientTransformation,
                          mesh: Mesh) -> Any:
  """A `TrainState` of NamedShardings: params and ref_params by the train rules, opt_state by
  `opt_state_shardings`, step and rng replicated. `state` may be abstract (`jax.eval_shape`)."""
  params = param_shardings(config, state.params, mesh, mode="train")
  ref = param_shardings(config, state.ref_params, mesh, mode="train")
  return state.replace(step=replicated(mesh), params=params, ref_params=ref,
                       opt_state=opt_state_shardings(optimizer, state.opt_state, params, mesh),
                       rng=replicated(mesh))


def rows_spec(shape: Sequence[int], mesh: Mesh, name: str = "rows") -> P:
  """Dim 0 (rows) over ("data", "fsdp"), other dims replicated; falls back as `spec_for` does."""
  return spec_for(shape, ROWS_AXES + (None,) * (len(shape) - 1), mesh, TRAIN_RULES, name=name)


def rows_shardings(tree: Any, mesh: Mesh) -> Any:
  """Row shardings for every array of a tree of per-row arrays (e.g. a `TrainBatch` of `[B, ...]` fields);
  scalars are replicated."""
  def one(path, x):
    return NamedSharding(mesh, rows_spec(x.shape, mesh, _canonical(path)) if x.ndim else P())
  return jax.tree_util.tree_map_with_path(one, tree)


def kv_cache_spec(config: Qwen2Config, batch_size: int, cache_len: int, mesh: Mesh) -> P:
  """Spec of one `[B, S, Hkv * D]` cache array: rows over ("data", "fsdp"), whole kv heads over tensor."""
  shape = (batch_size, cache_len, config.num_key_value_heads * config.dims_per_head)
  return spec_for(shape, KV_CACHE_AXES, mesh, TRAIN_RULES, head_units(config), name="kv_cache")


def shard_bytes(shape: Sequence[int], itemsize: int, spec: P, mesh: Mesh) -> int:
  """Bytes one device holds of an array of `shape` laid out by `spec` on `mesh`."""
  n = itemsize
  for i, dim in enumerate(shape):
    entry = spec[i] if i < len(spec) else None
    axes = () if entry is None else (entry,) if isinstance(entry, str) else tuple(entry)
    n *= -(-dim // _prod(mesh, axes))
  return n


@dataclasses.dataclass(frozen=True)
class LogicalLayout:
  """A `models.Layout`: the model's logical axes mapped to mesh axes by `rules`, under the context mesh.

  The model asks it for specs while it is traced inside `with jax.set_mesh(mesh):`; with no context mesh, or one
  device, there is nothing to pin and `spec` returns None. Hashable: it is a static argument of jitted steps.
  """

  rules: tuple[tuple[str, tuple[str, ...]], ...]

  def spec(self, shape: Sequence[int], logical: Sequence[str | None], units: Mapping[str, int] | None = None,
           name: str = "array") -> P | None:
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or mesh.size == 1:
      return None
    return spec_for(shape, logical, mesh, dict(self.rules), units, name=name)


# What the model's activations and KV caches follow in every jitted program (training and rollout alike: both
# split rows over ("data", "fsdp") and kv heads over "tensor").
TRAIN_LAYOUT = LogicalLayout(tuple(TRAIN_RULES.items()))
