"""The policy objectives of 2026 beside PPO-clip, each as verl 0.9.1's `core_algos` computes it (ALGORITHMS.md §17).

With delta = logp - old_logp, r = exp(delta), A the advantage, m the mask, w the rollout-correction weights
(`is_weights`, constant; they multiply the per-token loss before aggregation, as verl's `rollout_is_weights`):

| loss | per-token loss (or per sequence) | aggregation |
|---|---|---|
| GSPO (arXiv 2507.18071) | s = sum(delta m) / max(sum m, 1); log r_t = min(logp - sg(logp) + sg(s), 10); PPO-clip of r_t | `agg_mode` |
| CISPO (arXiv 2506.13585) | -sg(clip(r, 1 - eps_lo, 1 + eps_hi)) A logp, delta clamped to +-20 | `agg_mode` |
| SAPO (arXiv 2511.20347) | -A sigmoid(tau (r - 1)) 4 / tau, tau = tau_pos where A > 0 else tau_neg | seq-mean-token-mean |
| GMPO (arXiv 2507.20673) | per sequence -mean_t(A) exp(mean_t(sg(A) min(sg(A) delta, sg(A) clip(delta)))) | mean over rows |
| KL-Cov (arXiv 2505.22617) | -A r, plus ppo_kl_coef |delta| on the top kl_cov_ratio of valid tokens by cov | `agg_mode` |
| Clip-Cov (arXiv 2505.22617) | PPO-clip, gradient cut on a random clip_cov_ratio of tokens with lb < cov < ub | `agg_mode` |

cov = (A - mean(A)) (logp - mean(logp)) over valid tokens (detached). verl's exceptions are kept: SAPO always uses
seq-mean-token-mean, GMPO divides by the number of rows (its `agg_mode` is unused; under micro-batching pass the
mini-batch's row count as `global_num_seqs`) and takes the per-sequence geometric mean of w. Clip-Cov's random choice
takes an explicit PRNG `key` (verl uses torch's global generator).

Every loss returns (loss, metrics) with the same keys as `policy_loss`: `pg_loss`, `pg_clipfrac`,
`pg_clipfrac_lower`, `ppo_kl`, `clipfrac_high`, `clipfrac_low`, plus `cov_frac`, the share of valid tokens a Cov
method touched (0 for the others). Keys verl does not report are 0; KL-Cov's `ppo_kl` is verl's masked mean of
|delta|; Clip-Cov's `pg_clipfrac` is verl's share of tokens whose gradient it cut.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from prorl_jax.algorithms import _groups
from prorl_jax.algorithms import aggregation
from prorl_jax.algorithms import masked
from prorl_jax.algorithms.policy_loss import loss_inputs

LOG_RATIO_CLAMP = 20.0
GSPO_LOG_RATIO_MAX = 10.0
_ZERO = 0.0


def _check_positive(name: str, value, upper: float | None = None) -> None:
  if _groups.is_concrete_number(value) and not (float(value) > 0 and (upper is None or float(value) < upper)):
    bound = f"in (0, {upper})" if upper is not None else "> 0"
    raise ValueError(f"`{name}` must be {bound}; got {value}.")


def _clip_args(clip_low, clip_high) -> None:
  _check_positive("clip_low", clip_low, 1.0)
  _check_positive("clip_high", clip_high)


def _metrics(*, clipfrac=_ZERO, clipfrac_lower=_ZERO, ppo_kl=_ZERO, high=_ZERO, low=_ZERO, cov=_ZERO):
  """The metric keys every objective reports (zero where it has none); each value is already a masked mean."""
  as_metric = lambda v: v if isinstance(v, jax.Array) else jnp.asarray(v, jnp.float32)
  return {"pg_clipfrac": as_metric(clipfrac), "pg_clipfrac_lower": as_metric(clipfrac_lower),
          "ppo_kl": as_metric(ppo_kl), "clipfrac_high": as_metric(high), "clipfrac_low": as_metric(low),
          "cov_frac": as_metric(cov)}


def _fraction(cond, mask):
  return masked.masked_mean(cond.astype(jnp.float32), mask)


def _aggregate(per_token, mask, agg_mode, is_weights, counts):
  if is_weights is not None:
    per_token = per_token * is_weights
  return aggregation.agg_loss(per_token, mask, agg_mode, **counts)


def _counts(global_num_tokens, global_num_seqs, loss_scale_factor, dp_size):
  return dict(global_num_tokens=global_num_tokens, global_num_seqs=global_num_seqs,
              loss_scale_factor=loss_scale_factor, dp_size=dp_size)


def gspo_loss(logp: jax.Array, old_logp: jax.Array, adv: jax.Array, mask: jax.Array, *, clip_low: float,
              clip_high: float, agg_mode: str = "seq-mean-token-mean", is_weights: jax.Array | None = None,
              global_num_tokens=None, global_num_seqs=None, loss_scale_factor=None,
              dp_size: int = 1) -> tuple[jax.Array, dict[str, jax.Array]]:
  """GSPO: PPO-clip on the sequence-level ratio exp(mean_t delta) with a per-token gradient (verl `gspo`).

  Args: `[B, T]` arrays (logp differentiable); clip_low / clip_high: the ratio range [1 - clip_low, 1 + clip_high]
  (the paper uses ~3e-4 / 4e-4); agg_mode, global counts: see `aggregation.agg_loss`. Returns (loss, metrics).
  """
  logp, old, adv, m, w = loss_inputs(logp, old_logp, adv, mask, is_weights, agg_mode)
  _clip_args(clip_low, clip_high)
  delta = logp - old
  seq = masked.masked_sum(delta, m, axis=-1) / jnp.maximum(jnp.sum(m, axis=-1), 1.0)
  log_ratio = jnp.minimum(logp - jax.lax.stop_gradient(logp) + jax.lax.stop_gradient(seq)[:, None],
                          GSPO_LOG_RATIO_MAX)
  ratio = jnp.exp(log_ratio)
  loss1 = -adv * ratio
  loss2 = -adv * jnp.clip(ratio, 1.0 - clip_low, 1.0 + clip_high)
  loss = _aggregate(jnp.maximum(loss1, loss2), m, agg_mode, w,
                    _counts(global_num_tokens, global_num_seqs, loss_scale_factor, dp_size))
  metrics = _metrics(clipfrac=_fraction(loss2 > loss1, m), ppo_kl=masked.masked_mean(-delta, m),
                     high=_fraction((adv > 0) & (ratio > 1.0 + clip_high), m),
                     low=_fraction((adv < 0) & (ratio < 1.0 - clip_low), m))
  return loss, dict(metrics, pg_loss=loss)


def cispo_loss(logp: jax.Array, old_logp: jax.Array, adv: jax.Array, mask: jax.Array, *, clip_low: float,
               clip_high: float, agg_mode: str = "token-mean", is_weights: jax.Array | None = None,
               global_num_tokens=None, global_num_seqs=None, loss_scale_factor=None,
               dp_size: int = 1) -> tuple[jax.Array, dict[str, jax.Array]]:
  """CISPO (MiniMax-M1): -sg(clip(r)) A logp, so every token keeps a gradient and only its weight is clipped
  (verl `cispo`). Args as `gspo_loss`. Returns (loss, metrics)."""
  logp, old, adv, m, w = loss_inputs(logp, old_logp, adv, mask, is_weights, agg_mode)
  _clip_args(clip_low, clip_high)
  delta = jnp.clip(logp - old, -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
  ratio = jnp.exp(delta)
  clipped = jnp.clip(ratio, 1.0 - clip_low, 1.0 + clip_high)
  per_token = -jax.lax.stop_gradient(clipped) * adv * logp
  loss = _aggregate(per_token, m, agg_mode, w, _counts(global_num_tokens, global_num_seqs, loss_scale_factor, dp_size))
  metrics = _metrics(clipfrac=_fraction(ratio != clipped, m), ppo_kl=masked.masked_mean(-delta, m),
                     high=_fraction(ratio > 1.0 + clip_high, m), low=_fraction(ratio < 1.0 - clip_low, m))
  return loss, dict(metrics, pg_loss=loss)


def sapo_loss(logp: jax.Array, old_logp: jax.Array, adv: jax.Array, mask: jax.Array, *, tau_pos: float = 1.0,
              tau_neg: float = 1.05, is_weights: jax.Array | None = None, global_num_tokens=None,
              global_num_seqs=None, loss_scale_factor=None, dp_size: int = 1) -> tuple[jax.Array, dict[str, jax.Array]]:
  """SAPO: a soft, smooth gate sigmoid(tau (r - 1)) 4 / tau in place of the hard clip, tau_pos for A > 0 and tau_neg
  otherwise (verl defaults 1.0 / 1.05); always `seq-mean-token-mean`, as verl. Returns (loss, metrics)."""
  logp, old, adv, m, w = loss_inputs(logp, old_logp, adv, mask, is_weights, "seq-mean-token-mean")
  _check_positive("tau_pos", tau_pos)
  _check_positive("tau_neg", tau_neg)
  delta = jnp.clip(logp - old, -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
  ratio = jnp.exp(delta)
  tau = jnp.where(adv > 0, jnp.float32(tau_pos), jnp.float32(tau_neg))
  gate = jax.nn.sigmoid(tau * (ratio - 1.0)) * (4.0 / tau)
  loss = _aggregate(-gate * adv, m, "seq-mean-token-mean", w,
                    _counts(global_num_tokens, global_num_seqs, loss_scale_factor, dp_size))
  return loss, dict(_metrics(ppo_kl=masked.masked_mean(-delta, m)), pg_loss=loss)


def gmpo_loss(logp: jax.Array, old_logp: jax.Array, adv: jax.Array, mask: jax.Array, *, clip_low: float,
              clip_high: float, agg_mode: str = "token-mean", is_weights: jax.Array | None = None,
              global_num_seqs=None, **unused_counts) -> tuple[jax.Array, dict[str, jax.Array]]:
  """GMPO: the geometric mean of the token ratios per sequence, each log-ratio clipped to [-clip_low, clip_high]
  on the side that matters for the sign of A (verl `geo_mean`). As verl, the loss is the mean over rows (fully
  masked rows included; `global_num_seqs` replaces the row count under micro-batching) and `agg_mode` is checked
  but unused. Returns (loss, metrics)."""
  del unused_counts
  logp, old, adv, m, w = loss_inputs(logp, old_logp, adv, mask, is_weights, agg_mode)
  _clip_args(clip_low, clip_high)
  delta = logp - old
  sign = jnp.sign(adv)
  clamped = jnp.clip(delta, -clip_low, clip_high)
  chosen = sign * jnp.minimum(sign * delta, sign * clamped)
  tokens = jnp.sum(m, axis=-1)
  ratio = jnp.exp(jnp.sum(chosen * m, axis=-1) / (tokens + masked.MEAN_EPS))
  seq_adv = jnp.sum(adv * m, axis=-1) / (tokens + masked.MEAN_EPS)
  per_seq = -seq_adv * ratio
  if w is not None:
    per_seq = per_seq * jnp.exp(jnp.sum(jnp.log(w + 1e-10) * m, axis=-1) / (tokens + masked.MEAN_EPS))
  rows = per_seq.shape[0] if global_num_seqs is None else global_num_seqs
  loss = jnp.sum(per_seq) / jnp.maximum(jnp.asarray(rows, jnp.float32), 1.0)
  clipped = delta != clamped
  metrics = _metrics(clipfrac=_fraction(clipped & (adv > 0), m), clipfrac_lower=_fraction(clipped & (adv < 0), m),
                     ppo_kl=masked.masked_mean(-delta, m), high=_fraction(clipped & (adv > 0), m),
                     low=_fraction(clipped & (adv < 0), m))
  return loss, dict(metrics, pg_loss=loss)


def _ranks(scores: jax.Array, eligible: jax.Array) -> jax.Array:
  """Rank of each entry of `scores` `[B, T]` among the eligible ones, highest first (ties: first index first);
  ineligible entries rank after every eligible one."""
  flat = jnp.where(eligible, scores, -jnp.inf).reshape(-1)
  order = jnp.argsort(-flat, stable=True)
  return jnp.zeros_like(order).at[order].set(jnp.arange(flat.shape[0])).reshape(scores.shape)


def kl_cov_loss(logp: jax.Array, old_logp: jax.Array, adv: jax.Array, mask: jax.Array, *, kl_cov_ratio: float,
                ppo_kl_coef: float, agg_mode: str = "token-mean", is_weights: jax.Array | None = None,
                global_num_tokens=None, global_num_seqs=None, loss_scale_factor=None,
                dp_size: int = 1) -> tuple[jax.Array, dict[str, jax.Array]]:
  """KL-Cov: the unclipped surrogate -A r, plus ppo_kl_coef |delta| on the top max(1, floor(N kl_cov_ratio)) valid
  tokens by cov(logp, A) (N valid tokens; verl `kl_cov`, defaults ratio 2e-4, coef 0.1). Returns (loss, metrics)."""
  logp, old, adv, m, w = loss_inputs(logp, old_logp, adv, mask, is_weights, agg_mode)
  _check_positive("kl_cov_ratio", kl_cov_ratio)
  valid = m > 0
  delta = logp - old
  ratio = jnp.exp(delta)
  n = jnp.sum(m)
  lp = jax.lax.stop_gradient(logp)
  cov = (adv - jnp.sum(adv * m) / jnp.maximum(n, 1.0)) * (lp - jnp.sum(lp * m) / jnp.maximum(n, 1.0))
  k = jnp.maximum(1.0, jnp.floor(n * kl_cov_ratio))
  chosen = valid & (_ranks(cov, valid) < k) & (n > 0)
  per_token = -adv * ratio + jnp.where(chosen, ppo_kl_coef * jnp.abs(delta), 0.0)
  loss = _aggregate(per_token, m, agg_mode, w, _counts(global_num_tokens, global_num_seqs, loss_scale_factor, dp_size))
  metrics = _metrics(ppo_kl=masked.masked_mean(jnp.abs(delta), m), cov=_fraction(chosen, m))
  return loss, dict(metrics, pg_loss=loss)


def clip_cov_loss(logp: jax.Array, old_logp: jax.Array, adv: jax.Array, mask: jax.Array, *, key: jax.Array,
                  clip_low: float, clip_high: float, clip_cov_ratio: float, clip_cov_lb: float, clip_cov_ub: float,
                  agg_mode: str = "token-mean", is_weights: jax.Array | None = None, global_num_tokens=None,
                  global_num_seqs=None, loss_scale_factor=None,
                  dp_size: int = 1) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Clip-Cov: PPO-clip where the gradient of max(1, floor(N clip_cov_ratio)) tokens, drawn uniformly (with `key`)
  from the valid, unclipped tokens with clip_cov_lb < cov < clip_cov_ub, is cut (verl `clip_cov`, defaults
  2e-4, 1.0, 5.0). Returns (loss, metrics)."""
  logp, old, adv, m, w = loss_inputs(logp, old_logp, adv, mask, is_weights, agg_mode)
  _clip_args(clip_low, clip_high)
  _check_positive("clip_cov_ratio", clip_cov_ratio)
  valid = m > 0
  delta = logp - old
  ratio = jnp.exp(delta)
  loss1 = -adv * ratio
  loss2 = -adv * jnp.clip(ratio, 1.0 - clip_low, 1.0 + clip_high)
  lp = jax.lax.stop_gradient(logp)
  cov = (adv - masked.masked_mean(adv, m)) * (lp - masked.masked_mean(lp, m))
  eligible = valid & ~(loss2 > loss1) & (cov > clip_cov_lb) & (cov < clip_cov_ub)
  count = jnp.maximum(1.0, jnp.floor(jnp.sum(m) * clip_cov_ratio))
  priority = jax.random.uniform(key, cov.shape)  # a uniformly random order of the eligible tokens
  cut = eligible & (_ranks(priority, eligible) < count)
  per_token = jnp.where(cut, 0.0, jnp.maximum(loss1, loss2))
  loss = _aggregate(per_token, m, agg_mode, w, _counts(global_num_tokens, global_num_seqs, loss_scale_factor, dp_size))
  metrics = _metrics(clipfrac=_fraction(cut, m), ppo_kl=masked.masked_mean(-delta, m),
                     high=_fraction((adv > 0) & (ratio > 1.0 + clip_high), m),
                     low=_fraction((adv < 0) & (ratio < 1.0 - clip_low), m), cov=_fraction(cut, m))
  return loss, dict(metrics, pg_loss=loss)
