"""Rollout correction: importance weights between the trainer's policy and the rollout (sampling) policy.

The sampler and the trainer compute log-probs with different programs (and often dtypes), so the tokens were drawn
from pi_rollout while the loss assumes pi_old. With delta = trainer_logp - rollout_logp (verl 0.9.1
`rollout_corr_helper.compute_rollout_correction_weights`, ALGORITHMS.md §17):
  token level     w_t = exp(clip(delta_t, -20, 20))
  sequence level  w_t = exp(clip(sum_t delta_t m_t, -20, 20)) for every token of the row
then w *= m, and either truncated, w = min(w, upper) (TIS: a float threshold), or masked, w = 0 outside
[lower, upper] (ICE-POP / MIS: a (lower, upper) pair; NVIDIA's ProRLv2 uses (0.5, 5.0)). The weights are constants
that multiply the per-token policy loss (`is_weights` of every policy loss).

`rollout_mismatch_metrics` reports how far apart the two policies are, whether or not a correction is applied.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

from prorl_jax.algorithms import _groups
from prorl_jax.algorithms import masked

SAFETY_BOUND = 20.0
LEVELS = ("token", "sequence")


def parse_threshold(threshold: float | Sequence[float]) -> tuple[float | None, float]:
  """(lower or None, upper) of a threshold: a float truncates at `upper`; a (lower, upper) pair masks outside."""
  if isinstance(threshold, bool):
    raise ValueError(f"rollout correction threshold must be a number or a (lower, upper) pair; got {threshold!r}")
  if isinstance(threshold, (int, float)):
    lower, upper = None, float(threshold)
  else:
    values = tuple(threshold)
    if len(values) != 2:
      raise ValueError(f"rollout correction threshold must be a number or a (lower, upper) pair; got {threshold!r}")
    lower, upper = float(values[0]), float(values[1])
    if not 0 < lower <= upper:
      raise ValueError(f"rollout correction threshold (lower, upper) needs 0 < lower <= upper; got {threshold!r}")
  if not upper > 0:
    raise ValueError(f"rollout correction threshold must be > 0; got {threshold!r}")
  return lower, upper


def rollout_correction_weights(trainer_logp: jax.Array, rollout_logp: jax.Array, mask: jax.Array, *,
                               level: str = "token", threshold: float | Sequence[float] = 2.0
                               ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Importance weights pi_trainer / pi_rollout `[B, T]` (0 at padding) and their metrics.

  Args:
    trainer_logp: `[B, T]` log-probs of the sampled tokens under the trainer's policy (pi_old).
    rollout_logp: `[B, T]` log-probs the sampler recorded for them.
    mask: `[B, T]` valid-token mask.
    level: "token" or "sequence" (the product of the row's token ratios).
    threshold: a float `upper` (TIS: w = min(w, upper)) or a pair (lower, upper) (ICE-POP: w = 0 outside).

  Returns:
    (weights, metrics with verl's names: rollout_is_mean, rollout_is_max, rollout_is_min,
    rollout_is_ratio_fraction_high / _low (raw weights beyond upper / below lower, lower = 1 / upper for TIS),
    rollout_is_std, rollout_is_eff_sample_size, and rollout_is_oob_ratio (masked tokens, ICE-POP only)).
  """
  if level not in LEVELS:
    raise ValueError(f"rollout correction level must be one of {LEVELS}; got {level!r}")
  lower, upper = parse_threshold(threshold)
  _groups.check_rank("trainer_logp", trainer_logp, 2, "[B, T]")
  _groups.check_same_shape("trainer_logp", trainer_logp, "rollout_logp", rollout_logp)
  _groups.check_same_shape("trainer_logp", trainer_logp, "mask", mask)
  m = _groups.float_mask(mask)
  delta = jax.lax.stop_gradient(jnp.asarray(trainer_logp, jnp.float32) - jnp.asarray(rollout_logp, jnp.float32))
  if level == "token":
    log_for_metrics = delta
    raw = jnp.exp(jnp.clip(delta, -SAFETY_BOUND, SAFETY_BOUND))
  else:
    log_for_metrics = masked.masked_sum(delta, m, axis=-1)[:, None]
    raw = jnp.broadcast_to(jnp.exp(jnp.clip(log_for_metrics, -SAFETY_BOUND, SAFETY_BOUND)), delta.shape)
  raw = raw * m
  if lower is None:
    weights = jnp.minimum(raw, upper)
  else:
    weights = jnp.where((raw >= lower) & (raw <= upper), raw, 0.0)
  metrics = _weight_metrics(weights, raw, log_for_metrics, m, level, lower, upper)
  if lower is not None:
    metrics["rollout_is_oob_ratio"] = masked.masked_mean(((raw < lower) | (raw > upper)).astype(jnp.float32), m)
  return weights, metrics


def _weight_metrics(weights, raw, log_for_metrics, m, level, lower, upper) -> dict[str, jax.Array]:
  low = 1.0 / upper if lower is None else lower
  valid = m > 0
  out = {"rollout_is_mean": masked.masked_mean(weights, m)}
  if level == "sequence":
    out["rollout_is_max"] = jnp.exp(jnp.minimum(jnp.max(log_for_metrics), SAFETY_BOUND))
    out["rollout_is_min"] = jnp.exp(jnp.min(log_for_metrics))
    out["rollout_is_ratio_fraction_high"] = jnp.mean((log_for_metrics > jnp.log(upper)).astype(jnp.float32))
    out["rollout_is_ratio_fraction_low"] = jnp.mean((log_for_metrics < jnp.log(low)).astype(jnp.float32))
  else:
    out["rollout_is_max"] = jnp.max(jnp.where(valid, weights, -jnp.inf))
    out["rollout_is_min"] = jnp.min(jnp.where(valid, weights, jnp.inf))
    out["rollout_is_ratio_fraction_high"] = masked.masked_mean((raw > upper).astype(jnp.float32), m)
    out["rollout_is_ratio_fraction_low"] = masked.masked_mean((raw < low).astype(jnp.float32), m)
  clamped = jnp.clip(weights, 0.0, upper)
  mean = masked.masked_mean(clamped, m)
  var = masked.masked_mean(jnp.square(clamped), m) - jnp.square(mean)
  out["rollout_is_std"] = jnp.where(jnp.sum(m) > 1, jnp.sqrt(jnp.maximum(var, 0.0)), 0.0)
  out["rollout_is_eff_sample_size"] = 1.0 / masked.masked_mean(jnp.square(clamped / (mean + 1e-8)), m)
  return out


def rollout_mismatch_metrics(trainer_logp: jax.Array, rollout_logp: jax.Array, mask: jax.Array
                             ) -> dict[str, jax.Array]:
  """How far the rollout policy is from the trainer's on the sampled tokens (valid ones only):
  mean and max |trainer_logp - rollout_logp|, and KL(pi_rollout || pi_trainer) estimated from the rollout's own
  samples with k1 = mean(rollout - trainer) and k3 = mean(r - 1 - log r), r = pi_trainer / pi_rollout. All 0 when
  the two agree exactly (the CPU float32 path: the sampler and the trainer are batch invariant)."""
  _groups.check_same_shape("trainer_logp", trainer_logp, "rollout_logp", rollout_logp)
  _groups.check_same_shape("trainer_logp", trainer_logp, "mask", mask)
  m = _groups.float_mask(mask)
  delta = jnp.asarray(trainer_logp, jnp.float32) - jnp.asarray(rollout_logp, jnp.float32)
  clipped = jnp.clip(delta, -SAFETY_BOUND, SAFETY_BOUND)
  return {"mismatch/abs_logp_diff_mean": masked.masked_mean(jnp.abs(delta), m),
          "mismatch/abs_logp_diff_max": jnp.max(jnp.where(m > 0, jnp.abs(delta), 0.0)),
          "mismatch/kl_k1": masked.masked_mean(-delta, m),
          "mismatch/kl_k3": masked.masked_mean(jnp.exp(clipped) - 1.0 - clipped, m)}
