"""KL estimators k1, k2, k3, abs with separate input and output clamps (ALGORITHMS.md section 7).

With d = logp - ref_logp (log pi_theta - log pi_ref per sampled token), and d first clamped to the input clamp:
  k1 = d;  abs = |d|;  k2 = d^2 / 2;  k3 = exp(-d) - 1 + d   (Schulman's low-variance estimator)
then the value is clamped to the output clamp.

`input_clamp=None` / `output_clamp=None` mean "verl's default for this estimator", so
`kl_penalty(logp, ref_logp, est)` reproduces verl 0.9.1 `kl_penalty` for `kl`/`k1`, `abs`, `mse`/`k2`,
`low_var_kl`/`k3` (only k3 is clamped: input +-20, output +-10). Pass `math.inf` to switch a clamp off. The other
codebases' conventions, as presets for `KL_CONVENTIONS[name]` (keyword arguments of `kl_penalty`):

| convention     | input clamp (on d) | output clamp | source                                              |
|----------------|--------------------|--------------|-----------------------------------------------------|
| `verl`         | k3: 20, else none  | k3: 10, else none | verl `kl_penalty_forward`                     |
| `nemo_rl`      | 20                 | 10           | NeMo-RL `calculate_kl` (kl_input/output_clamp_value) |
| `openrlhf`     | none               | 10           | OpenRLHF `compute_approx_kl`                        |
| `prorlv2_blog` | 10                 | none         | N2 section 4: k2 = 0.5 * clamp(log pi_ref/pi, +-10)^2 |

`straight_through=True` (verl's `k3+` style) keeps the estimator's value but takes the gradient of the unclamped
k2: k2 - stop_grad(k2) + stop_grad(value).

As a loss term (ProRLv2 recipes: k2, beta = 1e-4), with the same aggregation as the policy loss:
  kl_loss = agg_loss(kl_penalty(logp, ref_logp, "k2", **KL_CONVENTIONS["nemo_rl"]), mask, agg_mode)
  loss = pg_loss + beta * kl_loss
Folded into rewards instead: `kl_in_reward` (verl `use_kl_in_reward`).
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp

from prorl_jax.algorithms import _groups
from prorl_jax.algorithms import masked

ESTIMATORS = ("k1", "k2", "k3", "abs")
_ALIASES = {"kl": "k1", "k1": "k1", "mse": "k2", "k2": "k2", "low_var_kl": "k3", "k3": "k3", "abs": "abs"}
NAMES = tuple(_ALIASES)  # every name `kl_penalty` accepts (ESTIMATORS and verl's aliases), each optionally with "+"
_VERL_CLAMPS = {"k1": (math.inf, math.inf), "abs": (math.inf, math.inf), "k2": (math.inf, math.inf),
                "k3": (20.0, 10.0)}

KL_CONVENTIONS: dict[str, dict[str, Any]] = {
    "verl": {},
    "nemo_rl": {"input_clamp": 20.0, "output_clamp": 10.0},
    "openrlhf": {"input_clamp": math.inf, "output_clamp": 10.0},
    "prorlv2_blog": {"input_clamp": 10.0, "output_clamp": math.inf},
}


def resolve_estimator(estimator: str) -> tuple[str, bool]:
  """Canonical estimator name and whether a trailing `+` asked for the straight-through gradient."""
  if not isinstance(estimator, str):
    raise ValueError(f"`estimator` must be a string, one of {ESTIMATORS} (or a verl alias); got {estimator!r}.")
  plus = estimator.endswith("+")
  base = estimator[:-1] if plus else estimator
  if base not in _ALIASES:
    raise ValueError(f"Unknown KL estimator {estimator!r}; choose one of {ESTIMATORS} or the verl names "
                     f"{tuple(k for k in _ALIASES if k not in ESTIMATORS)} (a trailing '+' selects the k2 "
                     "straight-through gradient).")
  return _ALIASES[base], plus


def _clamp(x: jax.Array, bound: float) -> jax.Array:
  if _groups.is_concrete_number(bound) and math.isinf(float(bound)):
    return x
  return jnp.clip(x, -bound, bound)


def kl_penalty(logp: jax.Array, ref_logp: jax.Array, estimator: str, *, input_clamp: float | None = None,
               output_clamp: float | None = None, straight_through: bool = False) -> jax.Array:
  """Per-token KL estimate `[B, T]` between the policy and the reference (table in the module docstring).

  Args:
    logp: `[...]` log pi_theta of the sampled tokens (or log pi_old when folding KL into rewards).
    ref_logp: `[...]` log pi_ref of the same tokens.
    estimator: "k1", "k2", "k3", "abs", or verl's "kl", "mse", "low_var_kl"; a trailing "+" = straight_through.
    input_clamp: bound on |d| before the estimator; None = verl's default for the estimator, math.inf = none.
    output_clamp: bound on |value|; None = verl's default, math.inf = none.
    straight_through: value of `estimator`, gradient of k2 (unbiased KL gradient; verl "k3+").

  Returns:
    float32 array of the input shape (not masked; aggregate with `agg_loss` or multiply by the mask).
  """
  name, plus = resolve_estimator(estimator)
  _groups.check_same_shape("logp", logp, "ref_logp", ref_logp)
  default_in, default_out = _VERL_CLAMPS[name]
  in_bound = default_in if input_clamp is None else input_clamp
  out_bound = default_out if output_clamp is None else output_clamp
  for field, bound in (("input_clamp", in_bound), ("output_clamp", out_bound)):
    if _groups.is_concrete_number(bound) and not float(bound) > 0:
      raise ValueError(f"`{field}` must be positive (math.inf disables it); got {bound}.")
  d_raw = jnp.asarray(logp, jnp.float32) - jnp.asarray(ref_logp, jnp.float32)
  d = _clamp(d_raw, in_bound)
  if name == "k1":
    value = d
  elif name == "abs":
    value = jnp.abs(d)
  elif name == "k2":
    value = 0.5 * jnp.square(d)
  else:
    value = jnp.exp(-d) - 1.0 + d
  value = _clamp(value, out_bound)
  if (straight_through or plus) and name != "k2":
    k2 = 0.5 * jnp.square(d_raw)
    value = k2 - jax.lax.stop_gradient(k2) + jax.lax.stop_gradient(value)
  return value


def kl_in_reward(token_scores: jax.Array, old_logp: jax.Array, ref_logp: jax.Array, response_mask: jax.Array,
                 beta: float | jax.Array, estimator: str = "k1", **kl_kwargs) -> tuple[jax.Array, jax.Array]:
  """Folds KL into token rewards (verl `apply_kl_penalty`): r = scores - beta * kl * m.

  Args:
    token_scores: `[B, T]` token-level scores (outcome score on the last valid token).
    old_logp, ref_logp: `[B, T]` log-probs of the rollout policy and the reference.
    response_mask: `[B, T]` valid-token mask.
    beta: KL coefficient.
    estimator: KL estimator (verl `algorithm.kl_penalty`, default "kl" = k1); extra kwargs go to `kl_penalty`.

  Returns:
    (token rewards `[B, T]`, current_kl scalar = batch mean of per-sequence masked-mean KL, verl's metric).
  """
  _groups.check_rank("token_scores", token_scores, 2, "[B, T]")
  _groups.check_same_shape("token_scores", token_scores, "response_mask", response_mask)
  mask = _groups.float_mask(response_mask)
  kld = kl_penalty(old_logp, ref_logp, estimator, **kl_kwargs) * mask
  rewards = jnp.asarray(token_scores, jnp.float32) - beta * kld
  current_kl = jnp.mean(masked.masked_mean(kld, mask, axis=-1))
  return rewards, current_kl
