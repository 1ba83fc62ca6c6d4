"""Length shaping of outcome rewards: DAPO overlong penalty, ProRLv2 scheduled cosine penalty, stop-properly.

All functions are pure functions of (lengths, correctness, step, config), so the schedule phase needs no state of
its own: the step lives in the train state and is checkpointed with it.

* DAPO overlong penalty, verl form (`DAPORewardManager`): expected = max_len - buffer_len,
  penalty = min(-(len - expected) / buffer_len * penalty_factor, 0); `max_len` is the generation cap, so the ramp
  reaches -penalty_factor exactly at the cap. Added to the correctness reward.
* ProRLv2 cosine length penalty (N2 section 3, after arXiv 2502.03373):
  eta(len) = eta_min + 0.5 * (eta_max - eta_min) * (1 + cos(pi * min(len, L) / L)),  R' = R + coef * eta(len),
  switched on and off in cycles (e.g. 100 steps on, 500 off). The correctness-aware variant (the cosine reward of
  arXiv 2502.03373) uses other end points for wrong answers; by default they are swapped, so a short wrong answer
  gets eta_min and a long one eta_max. eta_min, eta_max, coef and the cycle of the released model are not
  published [UNCONFIRMED]; the defaults below are placeholders, not ProRL's values.
* Stop-properly (NeMo-RL/OpenRLHF): a truncated response's reward is multiplied by `coef` (0 in both recipes).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from prorl_jax.algorithms import _groups


def overlong_penalty(lengths: jax.Array, max_len: int, buffer_len: int, penalty_factor: float) -> jax.Array:
  """DAPO soft overlong penalty `[B]` (verl form; DAPO Eq. 13). Values in [-penalty_factor, 0] for len <= max_len.

  Args:
    lengths: `[B]` response lengths in tokens.
    max_len: maximum response length (the generation cap, verl `max_resp_len`).
    buffer_len: length of the linear penalty ramp before the cap (verl `overlong_buffer.len`).
    penalty_factor: penalty at the cap (verl `overlong_buffer.penalty_factor`).
  """
  _groups.check_rank("lengths", lengths, 1, "[B]")
  if _groups.is_concrete_number(buffer_len) and not buffer_len > 0:
    raise ValueError(f"`buffer_len` must be positive (set the overlong penalty off instead); got {buffer_len}.")
  if _groups.is_concrete_number(max_len) and _groups.is_concrete_number(buffer_len) and max_len < buffer_len:
    raise ValueError(f"`max_len` ({max_len}) must be >= `buffer_len` ({buffer_len}).")
  exceed = jnp.asarray(lengths, jnp.float32) - (max_len - buffer_len)
  return jnp.minimum(-exceed / buffer_len * penalty_factor, 0.0)


def cosine_length_penalty(lengths: jax.Array, max_len: int, eta_min: float, eta_max: float, *,
                          correct: jax.Array | None = None, wrong_eta_min: float | None = None,
                          wrong_eta_max: float | None = None) -> jax.Array:
  """Cosine length term eta(len) `[B]`: eta_max at length 0, eta_min at `max_len` (and beyond).

  Args:
    lengths: `[B]` response lengths in tokens.
    max_len: the context limit L of the formula.
    eta_min, eta_max: end points (for correct answers in the correctness-aware variant).
    correct: optional `[B]` bool; when given, wrong answers use (wrong_eta_min, wrong_eta_max).
    wrong_eta_min, wrong_eta_max: end points for wrong answers; default swapped (eta_max, eta_min).
  """
  _groups.check_rank("lengths", lengths, 1, "[B]")
  if _groups.is_concrete_number(max_len) and not max_len > 0:
    raise ValueError(f"`max_len` must be positive (the context limit L); got {max_len}.")
  progress = jnp.clip(jnp.asarray(lengths, jnp.float32), 0.0, max_len) / max_len
  shape = 0.5 * (1.0 + jnp.cos(jnp.pi * progress))
  eta = eta_min + (eta_max - eta_min) * shape
  if correct is None:
    return eta
  _groups.check_same_shape("lengths", lengths, "correct", correct)
  w_min = eta_max if wrong_eta_min is None else wrong_eta_min
  w_max = eta_min if wrong_eta_max is None else wrong_eta_max
  eta_wrong = w_min + (w_max - w_min) * shape
  return jnp.where(jnp.asarray(correct).astype(bool), eta, eta_wrong)


def length_penalty_active(step: jax.Array | int, on_steps: int, off_steps: int, offset: int = 0) -> jax.Array:
  """Whether the cycled penalty is on at `step`: step >= offset and (step - offset) mod (on + off) < on.

  The cycle starts with the `on_steps` window; off_steps = 0 means always on (after offset), on_steps = 0 never.
  """
  if on_steps < 0 or off_steps < 0:
    raise ValueError(f"`on_steps` and `off_steps` must be >= 0; got {on_steps} and {off_steps}.")
  step = jnp.asarray(step, jnp.int32)
  period = on_steps + off_steps
  if period == 0:
    return jnp.zeros(step.shape, bool)
  return (step >= offset) & (jnp.mod(step - offset, period) < on_steps)


@dataclasses.dataclass(frozen=True)
class LengthShapingConfig:
  """Reward-shaping knobs (frozen, hashable: usable as a static jit argument).

  Cosine fields: `cosine_max_len` 0 disables the cosine penalty. Overlong fields: `overlong_buffer_len` 0 disables
  it. `stop_properly_coef` None disables stop-properly shaping.
  """

  cosine_max_len: int = 0
  cosine_eta_min: float = -0.5  # [UNCONFIRMED] placeholder
  cosine_eta_max: float = 0.0  # [UNCONFIRMED] placeholder
  cosine_coef: float = 1.0  # lambda_len [UNCONFIRMED]
  cosine_correctness_aware: bool = False
  cosine_wrong_eta_min: float | None = None
  cosine_wrong_eta_max: float | None = None
  cosine_on_steps: int = 100
  cosine_off_steps: int = 500
  cosine_offset: int = 0
  overlong_max_len: int = 0
  overlong_buffer_len: int = 0
  overlong_penalty_factor: float = 1.0
  stop_properly_coef: float | None = None

  def __post_init__(self):
    for name in ("cosine_max_len", "cosine_on_steps", "cosine_off_steps", "overlong_max_len", "overlong_buffer_len"):
      if getattr(self, name) < 0:
        raise ValueError(f"`{name}` must be >= 0; got {getattr(self, name)}.")
    if self.overlong_buffer_len and self.overlong_max_len < self.overlong_buffer_len:
      raise ValueError(f"`overlong_max_len` ({self.overlong_max_len}) must be >= `overlong_buffer_len` "
                       f"({self.overlong_buffer_len}); set it to the generation cap.")
    if not math.isfinite(self.cosine_coef):
      raise ValueError(f"`cosine_coef` must be finite; got {self.cosine_coef}.")


def stop_properly_shaping(rewards: jax.Array, truncated: jax.Array, coef: float) -> jax.Array:
  """Multiplies the reward of truncated responses (finish_reason == length) by `coef`. Shapes `[B]`."""
  _groups.check_same_shape("rewards", rewards, "truncated", truncated)
  rewards = jnp.asarray(rewards, jnp.float32)
  return jnp.where(jnp.asarray(truncated).astype(bool), rewards * coef, rewards)


def shape_rewards(rewards: jax.Array, lengths: jax.Array, step: jax.Array | int, config: LengthShapingConfig, *,
                  correct: jax.Array | None = None, truncated: jax.Array | None = None) -> jax.Array:
  """Applies the configured shaping to correctness rewards `[B]`: stop-properly, then + overlong, + cosine.

  Args:
    rewards: `[B]` correctness rewards.
    lengths: `[B]` response lengths in tokens.
    step: training step (drives the cosine on/off cycle).
    config: `LengthShapingConfig`.
    correct: `[B]` bool, needed for the correctness-aware cosine variant (default: rewards > 0).
    truncated: `[B]` bool, needed when `stop_properly_coef` is set.
  """
  _groups.check_same_shape("rewards", rewards, "lengths", lengths)
  out = jnp.asarray(rewards, jnp.float32)
  if config.stop_properly_coef is not None:
    if truncated is None:
      raise ValueError("`truncated` ([B] bool, finish_reason == length) is required when `stop_properly_coef` is "
                       "set.")
    out = stop_properly_shaping(out, truncated, config.stop_properly_coef)
  if config.overlong_buffer_len > 0:
    out = out + overlong_penalty(lengths, config.overlong_max_len, config.overlong_buffer_len,
                                 config.overlong_penalty_factor)
  if config.cosine_max_len > 0:
    if config.cosine_correctness_aware and correct is None:
      correct = jnp.asarray(rewards) > 0
    eta = cosine_length_penalty(lengths, config.cosine_max_len, config.cosine_eta_min, config.cosine_eta_max,
                                correct=correct if config.cosine_correctness_aware else None,
                                wrong_eta_min=config.cosine_wrong_eta_min, wrong_eta_max=config.cosine_wrong_eta_max)
    active = length_penalty_active(step, config.cosine_on_steps, config.cosine_off_steps, config.cosine_offset)
    out = out + jnp.where(active, config.cosine_coef * eta, 0.0)
  return out
