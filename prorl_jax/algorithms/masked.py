"""Masked reductions with verl 0.9.1 semantics (`verl/utils/torch_functional.py`).

These define the exact statistics used by the advantage estimators and the loss aggregation:

* masked_sum(v, m)  = sum(where(m, v, 0) * m)      (the `where` keeps NaN/inf at padding out of the sum)
* masked_mean(v, m) = masked_sum(v, m) / (sum(m) + 1e-8)
* masked_var(v, m)  = masked_mean((v - mu)^2, m) * N / (N - 1)   (unbiased=True, Bessel over N = sum(m))
* masked_whiten(v, m) = (v - mu) * rsqrt(var + 1e-8)

verl raises for N <= 1 in `masked_var`; that cannot be done inside `jit`, so here the Bessel factor is computed with
N - 1 floored at 1 (N = 1 gives a zero variance, N = 0 a zero mean), which keeps padded, all-dead batches finite.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

# verl's constants (masked_mean denominator and masked_whiten variance floor).
MEAN_EPS = 1e-8
WHITEN_EPS = 1e-8


def masked_sum(values: jax.Array, mask: jax.Array, axis: int | tuple[int, ...] | None = None) -> jax.Array:
  """Sum of `values` where `mask` is non-zero; masked NaN/inf never leak in. Shapes: values, mask `[...]`."""
  mask = jnp.asarray(mask)
  values = jnp.asarray(values)
  maskf = mask.astype(values.dtype) if jnp.issubdtype(values.dtype, jnp.floating) else mask.astype(jnp.float32)
  return jnp.sum(jnp.where(mask.astype(bool), values, 0) * maskf, axis=axis)


def masked_mean(values: jax.Array, mask: jax.Array, axis: int | tuple[int, ...] | None = None) -> jax.Array:
  """verl `masked_mean`: masked_sum / (sum(mask) + 1e-8). Shapes: values, mask `[...]`."""
  mask = jnp.asarray(mask)
  return masked_sum(values, mask, axis) / (jnp.sum(mask.astype(jnp.float32), axis=axis) + MEAN_EPS)


def masked_var(values: jax.Array, mask: jax.Array, unbiased: bool = True) -> jax.Array:
  """verl `masked_var` over all elements: E_m[(v - mu)^2], times N/(N-1) when `unbiased`. Returns a scalar."""
  mean = masked_mean(values, mask)
  var = masked_mean(jnp.square(values - mean), mask)
  if unbiased:
    n = jnp.sum(jnp.asarray(mask).astype(jnp.float32))
    var = var * n / jnp.maximum(n - 1.0, 1.0)
  return var


def masked_whiten(values: jax.Array, mask: jax.Array, shift_mean: bool = True) -> jax.Array:
  """verl `masked_whiten`: (v - mu) * rsqrt(var_unbiased + 1e-8); with shift_mean=False mu is added back."""
  mean = masked_mean(values, mask)
  var = masked_var(values, mask, unbiased=True)
  whitened = (values - mean) * jax.lax.rsqrt(var + WHITEN_EPS)
  if not shift_mean:
    whitened = whitened + mean
  return whitened
