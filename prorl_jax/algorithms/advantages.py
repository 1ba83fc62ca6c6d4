"""Outcome-reward advantage estimators over a flat batch of B = prompts x n responses (verl 0.9.1 semantics).

Inputs: `rewards[B]` sequence scores (verl sums its token-level rewards into exactly this), `group_ids[B]` integer
prompt labels, `response_mask[B, T]` (1 on valid response tokens). Outputs are token advantages `[B, T]`, zero on
masked tokens.

Group ids: eagerly, any non-negative integer labels (remapped with `np.unique`). Under `jax.jit` the segment count
must be static, so ids must lie in [0, num_groups) when the static `num_groups` is given, else in [0, B); a live
sample with an out-of-range id gets NaN advantages (an error cannot be raised inside jit). The optional
`sample_mask[B]` marks padded dead samples (static shapes): they drop out of every statistic, get zero advantages
and may carry any id (e.g. -1).

Formulas (ALGORITHMS.md section 4):
* REINFORCE++-baseline: c_i = s_i - mean_g(s) (singleton group: mean 0), C = c * m, then whitening over all valid
  tokens of the batch: verl uses the unbiased token variance, A = (C - mu) * rsqrt(var_u + 1e-8) * m; NeMo-RL and
  OpenRLHF use the population variance, A = (C - mu) * rsqrt(max(var, 1e-8)).
* GRPO: A_i = (s_i - mean_g) / (std_g + eps), std unbiased over the group's sequence scores (singleton: mean 0,
  std 1); Dr.GRPO (`scale_by_std=False`): A_i = s_i - mean_g.
* RLOO: A_i = s_i - mean_{j != i in g} s_j = (s_i - mean_g) * n / (n - 1); singleton: A_i = s_i.
* pass@k (verl `grpo_passk`): only each group's best response gets r_max - r_second (/ (std_g + eps)).
* REINFORCE++: discounted return-to-go of token rewards, then masked whitening (verl 0.9.1 carries the return
  across masked spans).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from prorl_jax.algorithms import _groups
from prorl_jax.algorithms import masked

_NEMO_VAR_FLOOR = 1e-8


def _check_outcome_inputs(rewards, response_mask) -> tuple[int, int]:
  _groups.check_rank("rewards", rewards, 1, "[B]")
  _groups.check_rank("response_mask", response_mask, 2, "[B, T]")
  batch = jnp.shape(rewards)[0]
  _groups.check_batch("response_mask", response_mask, batch, "[B, T]")
  return batch, jnp.shape(response_mask)[1]


def _setup(rewards, group_ids, response_mask, sample_mask, num_groups):
  batch, _ = _check_outcome_inputs(rewards, response_mask)
  groups = _groups.resolve_groups(group_ids, batch, num_groups, sample_mask)
  weights = _groups.sample_weights(sample_mask, batch) * groups.valid.astype(jnp.float32)
  stats = _groups.group_stats(rewards, groups, weights)
  live = weights > 0
  scores = jnp.where(live, jnp.asarray(rewards, jnp.float32), 0.0)
  return groups, weights, stats, scores


def reinforce_pp_baseline_advantages(rewards: jax.Array, group_ids: jax.Array, response_mask: jax.Array, *,
                                     sample_mask: jax.Array | None = None, unbiased: bool = True,
                                     num_groups: int | None = None) -> jax.Array:
  """REINFORCE++-baseline advantages `[B, T]` (ProRLv2; verl `reinforce_plus_plus_baseline`).

  Args:
    rewards: `[B]` sequence scores.
    group_ids: `[B]` integer prompt labels (under jit: in [0, num_groups or B)).
    response_mask: `[B, T]` valid-token mask.
    sample_mask: optional `[B]` live-sample mask; dead samples leave the group means and the global whitening.
    unbiased: True (verl): token variance with Bessel's correction, rsqrt(var + 1e-8). False (NeMo-RL, OpenRLHF):
      population variance, rsqrt(max(var, 1e-8)).
    num_groups: optional static number of groups (ids must be < num_groups).

  Returns:
    `[B, T]` float32 advantages, zero where `response_mask` is 0 or the sample is dead.
  """
  groups, weights, stats, scores = _setup(rewards, group_ids, response_mask, sample_mask, num_groups)
  baseline = jnp.where(stats.count > 1, stats.mean, 0.0)
  centred = jnp.where(weights > 0, scores - baseline, 0.0)
  token_mask = _groups.float_mask(response_mask) * weights[:, None]
  values = centred[:, None] * token_mask
  if unbiased:
    adv = masked.masked_whiten(values, token_mask) * token_mask
  else:
    n = jnp.maximum(jnp.sum(token_mask), 1.0)
    mean = jnp.sum(values * token_mask) / n
    var = jnp.sum(jnp.square(values - mean) * token_mask) / n
    adv = (values - mean) * jax.lax.rsqrt(jnp.maximum(var, _NEMO_VAR_FLOOR)) * token_mask
  return _groups.finalize(adv, groups, _groups.sample_weights(sample_mask, adv.shape[0]))


def grpo_advantages(rewards: jax.Array, group_ids: jax.Array, response_mask: jax.Array, eps: float = 1e-6,
                    scale_by_std: bool = True, *, sample_mask: jax.Array | None = None,
                    num_groups: int | None = None) -> jax.Array:
  """GRPO group z-score advantages `[B, T]` (P1 Eq. 2; verl `grpo`); Dr.GRPO with `scale_by_std=False`.

  Args:
    rewards: `[B]` sequence scores.
    group_ids: `[B]` integer prompt labels.
    response_mask: `[B, T]` valid-token mask.
    eps: added to the unbiased group std (verl 1e-6).
    scale_by_std: divide by std_g + eps (GRPO) or not (Dr.GRPO).
    sample_mask: optional `[B]` live-sample mask.
    num_groups: optional static number of groups.

  Returns:
    `[B, T]` float32 advantages; all-equal groups give exactly 0, singleton groups s_i / (1 + eps).
  """
  groups, weights, stats, scores = _setup(rewards, group_ids, response_mask, sample_mask, num_groups)
  multi = stats.count > 1
  mean = jnp.where(multi, stats.mean, 0.0)
  adv = scores - mean
  if scale_by_std:
    std = jnp.where(multi, jnp.sqrt(stats.sq_dev / jnp.maximum(stats.count - 1.0, 1.0)), 1.0)
    adv = adv / (std + eps)
  adv = adv[:, None] * _groups.float_mask(response_mask)
  return _groups.finalize(adv, groups, _groups.sample_weights(sample_mask, adv.shape[0]))


def rloo_advantages(rewards: jax.Array, group_ids: jax.Array, response_mask: jax.Array, *,
                    sample_mask: jax.Array | None = None, num_groups: int | None = None) -> jax.Array:
  """RLOO leave-one-out advantages `[B, T]` (verl `rloo`): (s_i - mean_g) * n / (n - 1); singleton: s_i.

  Args:
    rewards: `[B]` sequence scores.
    group_ids: `[B]` integer prompt labels.
    response_mask: `[B, T]` valid-token mask.
    sample_mask: optional `[B]` live-sample mask (n counts live samples only).
    num_groups: optional static number of groups.
  """
  groups, weights, stats, scores = _setup(rewards, group_ids, response_mask, sample_mask, num_groups)
  n = stats.count
  adv = jnp.where(n > 1, (scores - stats.mean) * n / jnp.maximum(n - 1.0, 1.0), scores)
  adv = adv[:, None] * _groups.float_mask(response_mask)
  return _groups.finalize(adv, groups, _groups.sample_weights(sample_mask, adv.shape[0]))


def discounted_returns(token_rewards: jax.Array, response_mask: jax.Array, gamma: float = 1.0) -> jax.Array:
  """Return-to-go `[B, T]` of token rewards, verl 0.9.1 REINFORCE++ form.

  Backwards over t: new = r_t + gamma * run; G_t = new * m_t; run = new * m_t + run * (1 - m_t), so the running
  return is carried unchanged across masked spans (multi-turn observations) and is 0 at padding.
  """
  _groups.check_rank("token_rewards", token_rewards, 2, "[B, T]")
  _groups.check_same_shape("token_rewards", token_rewards, "response_mask", response_mask)
  r = jnp.asarray(token_rewards, jnp.float32)
  m = _groups.float_mask(response_mask)

  def step(run, xs):
    r_t, m_t = xs
    new = r_t + gamma * run
    return new * m_t + run * (1.0 - m_t), new * m_t

  _, returns = jax.lax.scan(step, jnp.zeros(r.shape[:1], jnp.float32), (r.T, m.T), reverse=True)
  return returns.T


def reinforce_pp_advantages(token_rewards: jax.Array, response_mask: jax.Array, gamma: float = 1.0, *,
                            sample_mask: jax.Array | None = None) -> jax.Array:
  """Plain REINFORCE++ advantages `[B, T]` (verl `reinforce_plus_plus`): masked_whiten(returns) * m.

  Args:
    token_rewards: `[B, T]` token rewards (outcome score on the last valid token, optionally minus beta * KL).
    response_mask: `[B, T]` valid-token mask.
    gamma: discount (verl `algorithm.gamma`, 1.0 in the ProRL recipes).
    sample_mask: optional `[B]` live-sample mask; dead samples leave the whitening statistics.
  """
  returns = discounted_returns(token_rewards, response_mask, gamma)
  weights = _groups.sample_weights(sample_mask, returns.shape[0])
  token_mask = _groups.float_mask(response_mask) * weights[:, None]
  returns = jnp.where(token_mask > 0, returns, 0.0)
  return masked.masked_whiten(returns, token_mask) * token_mask


def outcome_to_token_rewards(rewards: jax.Array, response_mask: jax.Array) -> jax.Array:
  """Places each sequence score `rewards[B]` on its last valid token: `[B, T]` (verl's reward-manager layout)."""
  _check_outcome_inputs(rewards, response_mask)
  m = jnp.asarray(response_mask).astype(bool)
  t = m.shape[1]
  last = t - 1 - jnp.argmax(m[:, ::-1], axis=1)
  onehot = jax.nn.one_hot(last, t, dtype=jnp.float32) * jnp.any(m, axis=1, keepdims=True)
  return onehot * jnp.asarray(rewards, jnp.float32)[:, None]


def pass_at_k_advantages(rewards: jax.Array, group_ids: jax.Array, mask: jax.Array, *, scale_by_std: bool = True,
                         eps: float = 1e-6, sample_mask: jax.Array | None = None,
                         num_groups: int | None = None) -> jax.Array:
  """pass@k training advantages `[B, T]` (verl `grpo_passk`, arXiv 2503.19595): in each group only the best response
  (the first of equal best) gets r_max - r_second, divided by (unbiased group std + eps) when `scale_by_std`; every
  other response gets 0. Groups of one have no second response: ValueError eagerly (as verl), NaN under jit.

  Args: rewards `[B]`, group_ids `[B]` integer prompt labels, mask `[B, T]`; sample_mask / num_groups as
  `grpo_advantages`.
  """
  groups, weights, stats, scores = _setup(rewards, group_ids, mask, sample_mask, num_groups)
  live = (weights > 0) & groups.valid
  if not _groups.is_traced(stats.count) and bool(jnp.any(live & (stats.count < 2))):
    raise ValueError("pass@k advantages need at least 2 responses per prompt (rollout.n >= 2); a group has one")
  index = jnp.arange(scores.shape[0])
  seg = lambda x, op: op(x, groups.ids, num_segments=groups.num_segments)[groups.ids]
  is_max = live & (scores == stats.max)
  best = index == seg(jnp.where(is_max, index, scores.shape[0]), jax.ops.segment_min)
  second = seg(jnp.where(live & ~best, scores, -jnp.inf), jax.ops.segment_max)
  adv = jnp.where(best, scores - second, 0.0)
  if scale_by_std:
    adv = adv / (jnp.sqrt(stats.sq_dev / jnp.maximum(stats.count - 1.0, 1.0)) + eps)
  adv = jnp.where(stats.count < 2, jnp.nan, adv)
  adv = adv[:, None] * _groups.float_mask(mask)
  return _groups.finalize(adv, groups, _groups.sample_weights(sample_mask, adv.shape[0]))


ESTIMATORS = ("reinforce_plus_plus_baseline", "grpo", "drgrpo", "rloo", "reinforce_plus_plus", "pass_at_k")


def compute_advantages(estimator: str, rewards: jax.Array, group_ids: jax.Array, response_mask: jax.Array, *,
                       sample_mask: jax.Array | None = None, num_groups: int | None = None,
                       unbiased: bool = True, grpo_eps: float = 1e-6, gamma: float = 1.0) -> jax.Array:
  """Dispatches on a config name (verl names; `drgrpo` = GRPO without std). Returns `[B, T]` advantages."""
  if estimator == "reinforce_plus_plus_baseline":
    return reinforce_pp_baseline_advantages(rewards, group_ids, response_mask, sample_mask=sample_mask,
                                            unbiased=unbiased, num_groups=num_groups)
  if estimator in ("grpo", "drgrpo"):
    return grpo_advantages(rewards, group_ids, response_mask, grpo_eps, estimator == "grpo",
                           sample_mask=sample_mask, num_groups=num_groups)
  if estimator == "rloo":
    return rloo_advantages(rewards, group_ids, response_mask, sample_mask=sample_mask, num_groups=num_groups)
  if estimator == "pass_at_k":
    return pass_at_k_advantages(rewards, group_ids, response_mask, scale_by_std=True, eps=grpo_eps,
                                sample_mask=sample_mask, num_groups=num_groups)
  if estimator == "reinforce_plus_plus":
    token_rewards = outcome_to_token_rewards(rewards, response_mask)
    return reinforce_pp_advantages(token_rewards, response_mask, gamma, sample_mask=sample_mask)
  raise ValueError(f"Unknown advantage estimator {estimator!r}; choose one of {ESTIMATORS}.")
