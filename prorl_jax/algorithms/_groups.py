"""Group-id handling, per-group statistics and input checks shared by the estimators.

Group ids label the prompt each response belongs to. `jax.ops.segment_sum` needs a static number of segments, so:

* eagerly (concrete ids), arbitrary non-negative integer labels are remapped to 0..G-1 with `np.unique`;
* under `jax.jit` (traced ids) the number of segments is `num_groups` when given, else the batch size B, so ids
  must lie in [0, num_groups) (or [0, B)). A sample whose id is out of range cannot raise inside jit; its output is
  NaN so the mistake is visible instead of silently wrong.

A sample mask (1 = live, 0 = dead padding) removes samples from every statistic; dead samples get 0 outputs and
may carry any id (e.g. -1), eagerly and under jit.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


def is_traced(x) -> bool:
  """True when `x` is an abstract value inside a transformation (jit, grad, vmap)."""
  return isinstance(x, jax.core.Tracer)


def is_concrete_number(x) -> bool:
  """True for Python/NumPy scalars and concrete 0-d arrays (values we can validate on the host)."""
  if x is None or is_traced(x):
    return False
  return np.ndim(x) == 0


def check_rank(name: str, x, rank: int, shape_hint: str) -> None:
  if jnp.ndim(x) != rank:
    raise ValueError(f"`{name}` must have shape {shape_hint} (rank {rank}); got shape {jnp.shape(x)}.")


def check_same_shape(name_a: str, a, name_b: str, b) -> None:
  if jnp.shape(a) != jnp.shape(b):
    raise ValueError(f"`{name_a}` and `{name_b}` must have the same shape; got {jnp.shape(a)} and {jnp.shape(b)}.")


def check_batch(name: str, x, batch: int, hint: str = "[B]") -> None:
  if jnp.shape(x)[0] != batch:
    raise ValueError(f"`{name}` must have shape {hint} with B = {batch} (the batch size of `rewards`); got "
                     f"shape {jnp.shape(x)}.")


def float_mask(mask) -> jax.Array:
  """Any bool/int/float mask as float32."""
  return jnp.asarray(mask).astype(jnp.float32)


def sample_weights(sample_mask, batch: int) -> jax.Array:
  """`[B]` float32 live-sample weights (all ones when `sample_mask` is None)."""
  if sample_mask is None:
    return jnp.ones((batch,), jnp.float32)
  check_rank("sample_mask", sample_mask, 1, "[B]")
  check_batch("sample_mask", sample_mask, batch)
  return float_mask(sample_mask)


class Groups(NamedTuple):
  ids: jax.Array  # [B] int32 in [0, num_segments) where valid
  num_segments: int
  valid: jax.Array  # [B] bool: id in range


def _live_np(sample_mask, batch: int) -> np.ndarray | None:
  """Concrete live mask as numpy (None when traced): eager checks then ignore the ids of dead padding samples."""
  if sample_mask is None:
    return np.ones(batch, bool)
  check_rank("sample_mask", sample_mask, 1, "[B]")
  check_batch("sample_mask", sample_mask, batch)
  if is_traced(sample_mask):
    return None
  return np.asarray(sample_mask).astype(bool).reshape(-1)


def resolve_groups(group_ids, batch: int, num_groups: int | None, sample_mask=None) -> Groups:
  """Checks `group_ids` ([B] integers) and maps them to dense segment ids (see module docstring).

  Eagerly, only live samples' ids are checked, so dead padding may carry any id (e.g. -1).
  """
  check_rank("group_ids", group_ids, 1, "[B]")
  check_batch("group_ids", group_ids, batch)
  dtype = jnp.asarray(group_ids).dtype if not is_traced(group_ids) else group_ids.dtype
  if not jnp.issubdtype(dtype, jnp.integer):
    raise ValueError(f"`group_ids` must be integers (one label per prompt); got dtype {dtype}. Map prompt uids to "
                     "integers on the host first, e.g. `np.unique(uids, return_inverse=True)[1]`.")
  if num_groups is not None and (not isinstance(num_groups, (int, np.integer)) or num_groups < 1):
    raise ValueError(f"`num_groups` must be a positive Python int (static under jit); got {num_groups!r}.")
  live = _live_np(sample_mask, batch)
  if is_traced(group_ids) or (num_groups is not None and live is None):
    num_segments = int(num_groups) if num_groups is not None else max(batch, 1)
    ids = jnp.asarray(group_ids).astype(jnp.int32)
  elif num_groups is not None:
    num_segments = int(num_groups)
    ids_np = np.asarray(group_ids)
    live_ids = ids_np[live]
    if live_ids.size and (live_ids.min() < 0 or live_ids.max() >= num_segments):
      raise ValueError(f"`group_ids` must lie in [0, num_groups={num_segments}); got min {live_ids.min()}, max "
                       f"{live_ids.max()}. Raise `num_groups` or remap the ids.")
    ids = jnp.asarray(ids_np, jnp.int32)
  else:
    ids_np = np.asarray(group_ids).astype(np.int64)
    # With a traced sample mask we cannot tell dead from live here; negative ids then become invalid (NaN if live).
    check = ids_np[live] if live is not None else np.zeros((0,), np.int64)
    if check.size and check.min() < 0:
      raise ValueError(f"`group_ids` must be non-negative integer labels; got min {check.min()}.")
    usable = ids_np >= 0
    uniq, inverse = np.unique(ids_np[usable], return_inverse=True)
    dense = np.full(ids_np.shape, -1, np.int64)
    dense[usable] = inverse.reshape(-1)
    num_segments = max(len(uniq), 1)
    ids = jnp.asarray(dense, jnp.int32)
  valid = (ids >= 0) & (ids < num_segments)
  return Groups(jnp.where(valid, ids, 0), num_segments, valid)


class GroupStats(NamedTuple):
  count: jax.Array  # [B] live samples in the sample's group
  mean: jax.Array  # [B] group mean over live samples (0 for empty groups)
  sq_dev: jax.Array  # [B] sum of squared deviations from the group mean over live samples
  max: jax.Array  # [B] group max over live samples
  min: jax.Array  # [B] group min over live samples


def group_stats(values: jax.Array, groups: Groups, weights: jax.Array) -> GroupStats:
  """Per-sample view of its group's statistics over live samples (weights 1) of `values[B]`."""
  values = jnp.asarray(values, jnp.float32)
  live = (weights > 0) & groups.valid
  w = live.astype(jnp.float32)
  seg = lambda x: jax.ops.segment_sum(x, groups.ids, num_segments=groups.num_segments)
  count = seg(w)
  gmax = jax.ops.segment_max(jnp.where(live, values, -jnp.inf), groups.ids, num_segments=groups.num_segments)
  gmin = jax.ops.segment_min(jnp.where(live, values, jnp.inf), groups.ids, num_segments=groups.num_segments)
  # Shifting by the group minimum makes the mean of an all-equal group exactly that value, so its deviations (and
  # GRPO advantages) are exactly 0 rather than rounding noise divided by eps.
  shift = jnp.where(count > 0, gmin, 0.0)
  shifted = jnp.where(live, values - shift[groups.ids], 0.0)
  mean = shift + seg(shifted) / jnp.maximum(count, 1.0)
  dev = jnp.where(live, values - mean[groups.ids], 0.0)
  sq_dev = seg(jnp.square(dev))
  take = lambda x: x[groups.ids]
  return GroupStats(take(count), take(mean), take(sq_dev), take(gmax), take(gmin))


def finalize(per_sample: jax.Array, groups: Groups, weights: jax.Array) -> jax.Array:
  """Marks live samples with out-of-range ids NaN and zeros dead ones. `per_sample` is `[B]` or `[B, ...]`."""
  shape = (-1,) + (1,) * (per_sample.ndim - 1)
  out = jnp.where(groups.valid.reshape(shape), per_sample, jnp.nan)
  return jnp.where((weights > 0).reshape(shape), out, 0.0)
