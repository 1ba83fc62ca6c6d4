"""Reference-policy reset (ProRL v1 hard reset, ProRLv2 periodic reset) and the host-side reset policy.

ProRL v1 (P1 section 2.3.1): when validation stalls or degrades, pi_ref <- pi_theta and the optimizer is
re-initialised. ProRLv2 (N2 section 4): every 200-500 steps, or on KL spikes / stalled validation, pi_ref <- pi_theta
with the optimizer state kept. Right after a reset KL and its gradient are 0.

* `reset_reference` is pure and jit-able: it maps a train state (a `flax.struct.dataclass` with `params`,
  `ref_params`, `opt_state`) to the reset state with `state.replace(...)`.
* `ResetPolicy` (frozen config) + `ResetTrackerState` (small, serialisable via `to_dict`/`from_dict`) +
  `reset_decision` (pure host-side function) decide when to reset.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

import jax
import jax.numpy as jnp


def reset_reference(state: Any, *, optimizer: Any = None, params: Any = None, reset_optimizer: bool = False,
                    set_policy: bool = False, ref_dtype: Any = None) -> Any:
  """Returns `state` with `ref_params` set to the current (or the given) params.

  Args:
    state: train state with fields `params`, `ref_params`, `opt_state` and a `replace` method.
    optimizer: optax `GradientTransformation`; required when `reset_optimizer` (its `init` rebuilds opt_state).
    params: params to copy into the reference (e.g. the best checkpoint's); default `state.params`.
    reset_optimizer: re-initialise the optimizer state (ProRL v1) instead of keeping it (ProRLv2).
    set_policy: also set `state.params` to `params` (roll the policy back to the given params).
    ref_dtype: optional dtype for the reference copy (e.g. `jnp.bfloat16` to halve its memory).
  """
  for field in ("params", "ref_params", "opt_state"):
    if not hasattr(state, field):
      raise ValueError(f"`state` must have a `{field}` field (a flax.struct.dataclass train state); got "
                       f"{type(state).__name__}.")
  if reset_optimizer and optimizer is None:
    raise ValueError("`reset_optimizer=True` needs `optimizer` (the optax GradientTransformation used to build "
                     "`opt_state`), so the state can be re-initialised with `optimizer.init(params)`.")
  if set_policy and params is None:
    raise ValueError("`set_policy=True` needs `params` (the params to roll the policy back to).")
  source = state.params if params is None else params
  if params is not None and jax.tree.structure(params) != jax.tree.structure(state.params):
    raise ValueError("`params` must have the same tree structure as `state.params`.")
  # A real copy: if ref_params aliased params, donating the state to a jitted step would donate one buffer twice.
  cast = (lambda x: jnp.array(x, dtype=ref_dtype, copy=True)) if ref_dtype is not None else \
      (lambda x: jnp.array(x, copy=True))
  updates = {"ref_params": jax.tree.map(cast, source)}
  policy_params = source if set_policy else state.params
  if set_policy:
    updates["params"] = policy_params
  if reset_optimizer:
    updates["opt_state"] = optimizer.init(policy_params)
  return state.replace(**updates)


@dataclasses.dataclass(frozen=True)
class ResetPolicy:
  """When to reset the reference policy. Any enabled trigger fires a reset (subject to the cooldown).

  Attributes:
    every_k_steps: reset when this many steps have passed since the last reset (ProRLv2: 200-500). None = off.
    patience: reset after this many consecutive validation evaluations without improving the best score by more
      than `min_delta` (ProRL v1's stall trigger). None = off.
    min_delta: improvement threshold for the patience trigger.
    higher_is_better: direction of the validation score.
    kl_threshold: reset when the measured KL to the reference exceeds this (KL-spike trigger). None = off.
    min_steps_between_resets: cooldown after a reset during which no trigger fires. The run start (step 0, where
      the reference is the initial policy) counts as a reset for the cooldown and the periodic trigger.
    reset_optimizer: whether a reset re-initialises the optimizer (v1) or keeps it (v2); read by the trainer.
  """

  every_k_steps: int | None = None
  patience: int | None = None
  min_delta: float = 0.0
  higher_is_better: bool = True
  kl_threshold: float | None = None
  min_steps_between_resets: int = 0
  reset_optimizer: bool = False

  def __post_init__(self):
    for name in ("every_k_steps", "patience"):
      value = getattr(self, name)
      if value is not None and (not isinstance(value, int) or value < 1):
        raise ValueError(f"`{name}` must be a positive int or None (off); got {value!r}.")
    if self.kl_threshold is not None and not self.kl_threshold > 0:
      raise ValueError(f"`kl_threshold` must be positive or None (off); got {self.kl_threshold}.")
    if self.min_steps_between_resets < 0 or self.min_delta < 0:
      raise ValueError("`min_steps_between_resets` and `min_delta` must be >= 0.")


@dataclasses.dataclass(frozen=True)
class ResetTrackerState:
  """Host-side tracker of the reset policy: plain Python numbers, checkpoint with `to_dict()`."""

  best_score: float | None = None
  evals_since_improvement: int = 0
  last_reset_step: int = 0
  num_resets: int = 0

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> "ResetTrackerState":
    best = d.get("best_score")
    return cls(best_score=None if best is None else float(best),
               evals_since_improvement=int(d.get("evals_since_improvement", 0)),
               last_reset_step=int(d.get("last_reset_step", 0)), num_resets=int(d.get("num_resets", 0)))


def reset_decision(policy: ResetPolicy, tracker: ResetTrackerState, *, step: int, val_score: float | None = None,
                   kl: float | None = None) -> tuple[bool, tuple[str, ...], ResetTrackerState]:
  """Decides whether to reset at `step`; pure (returns the updated tracker).

  Args:
    policy: the reset policy.
    tracker: tracker state before this step.
    step: current training step (after the update that produced `kl`).
    val_score: validation score, when one was computed at this step (feeds the patience trigger).
    kl: measured KL to the reference at this step (feeds the spike trigger).

  Returns:
    (reset?, reasons among "periodic", "stagnation", "kl_spike", new tracker). After a reset the tracker records
    the step, counts it and clears the patience counter; the best score is kept.
  """
  best, stale = tracker.best_score, tracker.evals_since_improvement
  if val_score is not None:
    score = float(val_score)
    if math.isnan(score):
      raise ValueError("`val_score` is NaN; pass None when no validation ran at this step.")
    improved = best is None or (score > best + policy.min_delta if policy.higher_is_better
                                else score < best - policy.min_delta)
    if improved:
      best, stale = score, 0
    else:
      stale += 1
  since = step - tracker.last_reset_step
  reasons = []
  if policy.every_k_steps is not None and since >= policy.every_k_steps:
    reasons.append("periodic")
  if policy.patience is not None and stale >= policy.patience:
    reasons.append("stagnation")
  if policy.kl_threshold is not None and kl is not None and float(kl) > policy.kl_threshold:
    reasons.append("kl_spike")
  if since < policy.min_steps_between_resets:
    reasons = []
  new = dataclasses.replace(tracker, best_score=best, evals_since_improvement=stale)
  if reasons:
    new = dataclasses.replace(new, evals_since_improvement=0, last_reset_step=step, num_resets=tracker.num_resets + 1)
  return bool(reasons), tuple(reasons), new
