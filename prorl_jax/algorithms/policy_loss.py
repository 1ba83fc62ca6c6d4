"""PPO clipped surrogate with decoupled (DAPO clip-higher) and optional dual clipping (verl 0.9.1 `vanilla`).

Per token, with A the advantage (ALGORITHMS.md section 5):
  delta = clamp(logp - old_logp, -20, 20);  rho = exp(delta)
  L1 = -A * rho;  L2 = -A * clip(rho, 1 - clip_low, 1 + clip_high);  L_clip = max(L1, L2)
  dual clip (only where A < 0, when clip_c is set): L = min(-A * clip_c, L_clip)
  loss = agg(L [* is_weights], mask, agg_mode)

Metrics (verl names, float32 jnp scalars so they work inside jit):
  pg_clipfrac        masked_mean(L2 > L1): tokens where the trust-region clip is active
  pg_clipfrac_lower  masked_mean((L_clip > -A * clip_c) & (A < 0)): tokens where the dual clip is active
  ppo_kl             masked_mean(-delta): approximate KL(pi_old || pi_theta)
  clipfrac_high      masked_mean((A > 0) & (rho > 1 + clip_high)): upper (clip-higher) bound active
  clipfrac_low       masked_mean((A < 0) & (rho < 1 - clip_low)): lower bound active
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from prorl_jax.algorithms import _groups
from prorl_jax.algorithms import aggregation
from prorl_jax.algorithms import masked

LOG_RATIO_CLAMP = 20.0


def _check_clip(name: str, value, lower: float, hint: str) -> None:
  if _groups.is_concrete_number(value) and not float(value) > lower:
    raise ValueError(f"`{name}` must be > {lower} ({hint}); got {value}.")


def loss_inputs(logp, old_logp, advantages, response_mask, is_weights, agg_mode):
  """Checks a policy loss's `[B, T]` inputs and returns them as float32, everything but `logp` constant:
  (logp, old_logp, advantages, mask, is_weights or None)."""
  aggregation.check_agg_mode(agg_mode)
  _groups.check_rank("logp", logp, 2, "[B, T]")
  for name, x in (("old_logp", old_logp), ("advantages", advantages), ("response_mask", response_mask)):
    _groups.check_same_shape("logp", logp, name, x)
  if is_weights is not None:
    _groups.check_same_shape("logp", logp, "is_weights", is_weights)
    is_weights = jax.lax.stop_gradient(jnp.asarray(is_weights, jnp.float32))
  constant = lambda x: jax.lax.stop_gradient(jnp.asarray(x, jnp.float32))
  return (jnp.asarray(logp, jnp.float32), constant(old_logp), constant(advantages), _groups.float_mask(response_mask),
          is_weights)


def policy_loss(logp: jax.Array, old_logp: jax.Array, advantages: jax.Array, response_mask: jax.Array, *,
                clip_low: float = 0.2, clip_high: float = 0.28, clip_c: float | None = None,
                agg_mode: str = "token-mean", global_num_tokens: jax.Array | float | None = None,
                global_num_seqs: jax.Array | float | None = None, loss_scale_factor: float | None = None,
                dp_size: int = 1, is_weights: jax.Array | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
  """PPO-clip policy loss with decoupled clip range (P1 Eq. 3, N2 section 1, DAPO Eq. 10).

  Args:
    logp: `[B, T]` log pi_theta of the sampled tokens (differentiable).
    old_logp: `[B, T]` log pi_old of the same tokens (treated as constant).
    advantages: `[B, T]` token advantages (treated as constant).
    response_mask: `[B, T]` valid-token mask.
    clip_low: epsilon_low, ratio floor 1 - clip_low (ProRLv2 0.2).
    clip_high: epsilon_high, ratio ceiling 1 + clip_high (ProRLv2 0.28, ProRL v1 0.4).
    clip_c: dual-clip constant (> 1), applied only where A < 0; None disables it (verl's default is 3.0).
    agg_mode: loss aggregation mode, see `aggregation.AGG_MODES`.
    global_num_tokens, global_num_seqs, loss_scale_factor, dp_size: exact global normalisation, see `agg_loss`.
    is_weights: optional `[B, T]` importance weights multiplied into the per-token loss (e.g. TIS/ICE-POP).

  Returns:
    (loss scalar, metrics dict with `pg_loss`, `pg_clipfrac`, `pg_clipfrac_lower`, `ppo_kl`, `clipfrac_high`,
    `clipfrac_low`).
  """
  logp, old, adv, mask, is_weights = loss_inputs(logp, old_logp, advantages, response_mask, is_weights, agg_mode)
  _check_clip("clip_low", clip_low, 0.0, "ratio floor is 1 - clip_low")
  _check_clip("clip_high", clip_high, 0.0, "ratio ceiling is 1 + clip_high")
  if _groups.is_concrete_number(clip_low) and float(clip_low) >= 1.0:
    raise ValueError(f"`clip_low` must be < 1 so the ratio floor 1 - clip_low stays positive; got {clip_low}.")
  if clip_c is not None:
    _check_clip("clip_c", clip_c, 1.0, "dual-clip PPO bound; pass clip_c=None to disable dual clipping")

  delta = jnp.clip(logp - old, -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
  ratio = jnp.exp(delta)
  loss1 = -adv * ratio
  loss2 = -adv * jnp.clip(ratio, 1.0 - clip_low, 1.0 + clip_high)
  clipped = jnp.maximum(loss1, loss2)
  metrics = {
      "pg_clipfrac": masked.masked_mean((loss2 > loss1).astype(jnp.float32), mask),
      "ppo_kl": masked.masked_mean(-delta, mask),
      "clipfrac_high": masked.masked_mean(((adv > 0) & (ratio > 1.0 + clip_high)).astype(jnp.float32), mask),
      "clipfrac_low": masked.masked_mean(((adv < 0) & (ratio < 1.0 - clip_low)).astype(jnp.float32), mask),
  }
  if clip_c is None:
    per_token = clipped
    metrics["pg_clipfrac_lower"] = jnp.zeros((), jnp.float32)
  else:
    loss3 = -adv * clip_c
    dual = jnp.minimum(loss3, clipped)
    per_token = jnp.where(adv < 0, dual, clipped)
    metrics["pg_clipfrac_lower"] = masked.masked_mean(((clipped > loss3) & (adv < 0)).astype(jnp.float32), mask)
  if is_weights is not None:
    per_token = per_token * is_weights
  loss = aggregation.agg_loss(per_token, mask, agg_mode, global_num_tokens=global_num_tokens,
                              global_num_seqs=global_num_seqs, loss_scale_factor=loss_scale_factor, dp_size=dp_size)
  metrics["pg_loss"] = loss
  return loss, metrics
