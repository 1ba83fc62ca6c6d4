"""The device-side train state and the optimizer built from the config."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax


@flax.struct.dataclass
class TrainState:
  """Everything on device that a checkpoint must carry.

  step: int32, updates applied so far (the RL step count).
  params: the policy. ref_params: the KL reference (reset to the policy by reference resets).
  opt_state: optax state. rng: raw PRNG key data (uint32), the source of every rollout's randomness.
  """

  step: jax.Array
  params: Any
  ref_params: Any
  opt_state: Any
  rng: jax.Array


def make_optimizer(opt_config) -> optax.GradientTransformation:
  """Global-norm gradient clipping, then AdamW at a constant learning rate (ProRL v1), after an optional linear
  warmup over `warmup_steps` optimizer updates."""
  lr = optax.linear_schedule(0.0, opt_config.lr, opt_config.warmup_steps) if opt_config.warmup_steps else opt_config.lr
  chain = []
  if opt_config.grad_clip and opt_config.grad_clip > 0:
    chain.append(optax.clip_by_global_norm(opt_config.grad_clip))
  chain.append(optax.adamw(lr, b1=opt_config.b1, b2=opt_config.b2, eps=opt_config.eps,
                           weight_decay=opt_config.weight_decay))
  return optax.chain(*chain)


def create_train_state(params: Any, optimizer: optax.GradientTransformation, *, seed: int,
                       ref_dtype: Any = None) -> TrainState:
  """A fresh state: the reference is a copy of the initial policy (optionally in `ref_dtype`)."""
  cast = (lambda x: jnp.array(x, dtype=ref_dtype, copy=True)) if ref_dtype is not None else \
      (lambda x: jnp.array(x, copy=True))
  return TrainState(step=jnp.int32(0), params=params, ref_params=jax.tree.map(cast, params),
                    opt_state=optimizer.init(params), rng=jax.random.key_data(jax.random.key(seed)))
