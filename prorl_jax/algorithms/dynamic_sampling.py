"""Dynamic sampling (DAPO section 3.2): drop groups without learning signal and refill the training batch.

* `dynamic_sampling_keep` is the jit-able per-sample keep mask. verl rule (default, verl `filter_groups`): keep a
  group iff its rewards are not all equal (std > 0) or it has a single sample. It is evaluated as
  max - min > atol, which is exact for equal rewards (a float std of equal values can come out as 1e-9 and let an
  all-equal group through). OpenRLHF rule: keep iff low < mean(rewards) < high (default (0, 1)).
* `DynamicSamplingAccumulator` is the host-side (numpy) buffer of the refill loop: feed it each generation batch
  and its keep mask until `ready`, then `take()` exactly the target number of prompts, whole groups, in arrival
  order (surplus groups are dropped, as verl does, so nothing carries over from one step to the next). Like verl it
  raises after `max_gen_batches` generation batches without filling the batch. It keeps the step's counters
  (`num_gen_batches`, `prompts_seen`, `prompts_kept`) until `take()`.
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from prorl_jax.algorithms import _groups

KEEP_RULES = ("verl", "openrlhf")
# What the keep rule reads per sample: the verifier's score, or the reward after length shaping.
FILTER_METRICS = ("score", "reward")


def dynamic_sampling_keep(rewards: jax.Array, group_ids: jax.Array, *, rule: str = "verl", atol: float = 0.0,
                          low: float = 0.0, high: float = 1.0, sample_mask: jax.Array | None = None,
                          num_groups: int | None = None) -> jax.Array:
  """Per-sample keep mask `bool[B]`: True for samples whose whole group carries learning signal.

  Args:
    rewards: `[B]` sequence scores (the filter metric, e.g. accuracy or score).
    group_ids: `[B]` integer prompt labels (same rules as the advantage estimators).
    rule: "verl" (group rewards not all equal, or a group of one) or "openrlhf" (low < group mean < high).
    atol: verl rule: a group is all-equal when max - min <= atol (0 = exact equality).
    low, high: OpenRLHF rule bounds (exclusive).
    sample_mask: optional `[B]` live-sample mask; dead samples are never kept and do not count in groups.
    num_groups: optional static number of groups.
  """
  if rule not in KEEP_RULES:
    raise ValueError(f"Unknown dynamic-sampling rule {rule!r}; choose one of {KEEP_RULES}.")
  _groups.check_rank("rewards", rewards, 1, "[B]")
  batch = jnp.shape(rewards)[0]
  groups = _groups.resolve_groups(group_ids, batch, num_groups, sample_mask)
  weights = _groups.sample_weights(sample_mask, batch) * groups.valid.astype(jnp.float32)
  stats = _groups.group_stats(rewards, groups, weights)
  if rule == "verl":
    keep = (stats.max - stats.min > atol) | (stats.count == 1)
  else:
    keep = (stats.mean > low) & (stats.mean < high)
  return keep & (weights > 0)


class DynamicSamplingError(RuntimeError):
  """The generation budget ran out before enough groups with learning signal were collected."""


class DynamicSamplingAccumulator:
  """Fills a training batch of `target_prompts` groups from successive generation batches (host side, numpy).

  Usage:
    acc = DynamicSamplingAccumulator(target_prompts=256, max_gen_batches=10)
    while not acc.ready:
      batch, gids = generate_and_score()                    # dict of [B, ...] arrays, [B] int group ids
      acc.add(batch, gids, np.asarray(dynamic_sampling_keep(batch["rewards"], gids)))
    train_batch, train_gids = acc.take()                    # exactly 256 groups, gids dense 0..255

  Groups are kept whole: the keep mask must be constant within a group. Group ids are local to each `add` call.
  Surplus groups are discarded at `take` (verl).
  """

  def __init__(self, target_prompts: int, max_gen_batches: int = 10):
    if not isinstance(target_prompts, (int, np.integer)) or target_prompts < 1:
      raise ValueError(f"`target_prompts` must be a positive int (prompts per training batch); got "
                       f"{target_prompts!r}.")
    if not isinstance(max_gen_batches, (int, np.integer)):
      raise ValueError(f"`max_gen_batches` must be an int (<= 0 for unlimited); got {max_gen_batches!r}.")
    self.target_prompts = int(target_prompts)
    self.max_gen_batches = int(max_gen_batches)
    self._groups: list[dict[str, np.ndarray]] = []
    self._keys: tuple[str, ...] | None = None
    self.num_gen_batches = 0
    self.prompts_seen = 0
    self.prompts_kept = 0

  @property
  def num_prompts(self) -> int:
    """Groups (prompts) currently buffered."""
    return len(self._groups)

  @property
  def num_samples(self) -> int:
    return sum(len(next(iter(g.values()))) for g in self._groups) if self._groups else 0

  @property
  def ready(self) -> bool:
    return self.num_prompts >= self.target_prompts

  def add(self, batch: Mapping[str, Any], group_ids: Any, keep: Any) -> None:
    """Buffers the kept groups of one generation batch.

    Args:
      batch: dict name -> array with leading dimension B (per-sample data: tokens, masks, rewards, ...).
      group_ids: `[B]` integer prompt labels of this generation batch.
      keep: `[B]` bool keep mask (e.g. from `dynamic_sampling_keep`), constant within each group.

    Raises:
      DynamicSamplingError: after `max_gen_batches` batches since the last `take` without reaching the target.
    """
    gids = np.asarray(group_ids)
    keep = np.asarray(keep).astype(bool)
    if gids.ndim != 1 or keep.shape != gids.shape:
      raise ValueError(f"`group_ids` and `keep` must both have shape [B]; got {gids.shape} and {keep.shape}.")
    if not batch:
      raise ValueError("`batch` must be a non-empty dict of per-sample arrays.")
    arrays = {k: np.asarray(v) for k, v in batch.items()}
    for k, v in arrays.items():
      if v.ndim == 0 or v.shape[0] != gids.shape[0]:
        raise ValueError(f"`batch[{k!r}]` must have leading dimension B = {gids.shape[0]} (one row per sample); "
                         f"got shape {v.shape}.")
    keys = tuple(sorted(arrays))
    if self._keys is not None and keys != self._keys:
      raise ValueError(f"`batch` keys changed between generation batches: {self._keys} then {keys}.")
    self._keys = keys
    uniq, first = np.unique(gids, return_index=True)
    for gid in uniq[np.argsort(first)]:
      rows = np.flatnonzero(gids == gid)
      if keep[rows].any() != keep[rows].all():
        raise ValueError(f"`keep` must be constant within each group, but group {gid} is partly kept. Compute it "
                         "with `dynamic_sampling_keep`, which keeps or drops whole groups.")
      self.prompts_seen += 1
      if keep[rows[0]]:
        self.prompts_kept += 1
        self._groups.append({k: v[rows] for k, v in arrays.items()})
    self.num_gen_batches += 1
    if not self.ready and 0 < self.max_gen_batches <= self.num_gen_batches:
      raise DynamicSamplingError(
          f"Dynamic sampling kept {self.num_prompts} of the {self.target_prompts} prompts needed after "
          f"{self.num_gen_batches} generation batches ({self.prompts_kept}/{self.prompts_seen} prompts had reward "
          "variance). Raise `dynamic_sampling.max_gen_batches` (<= 0 for unlimited), generate more prompts per "
          "batch, lower the training batch size, or disable dynamic-sampling filtering.")

  def take(self, target_prompts: int | None = None) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Returns exactly `target_prompts` groups (default: the constructor's) and their dense ids `[N]` (0..P-1).

    Rows are grouped contiguously in arrival order; surplus groups are dropped (verl). Resets the counters.
    """
    target = self.target_prompts if target_prompts is None else int(target_prompts)
    if target < 1 or self.num_prompts < target:
      raise ValueError(f"Cannot take {target} prompts: {self.num_prompts} buffered. Check `ready` first.")
    chosen = self._groups[:target]
    out = {k: np.concatenate([g[k] for g in chosen]) for k in self._keys}
    sizes = [len(g[self._keys[0]]) for g in chosen]
    gids = np.repeat(np.arange(target, dtype=np.int32), sizes)
    self._groups = []
    self.num_gen_batches = 0
    self.prompts_seen = self.prompts_kept = 0
    return out, gids
