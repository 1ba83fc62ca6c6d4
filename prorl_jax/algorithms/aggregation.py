"""Loss aggregation `[B, T] -> scalar` (verl 0.9.1 `agg_loss`) with exact global normalisation.

With L the per-token loss, m the mask and S the number of sequences with at least one valid token:

| mode                       | value                                                          |
|----------------------------|----------------------------------------------------------------|
| `token-mean`               | sum(L m) / (global_num_tokens or sum(m)) * dp_size             |
| `token-sum`                | sum(L m) * dp_size                                              |
| `seq-mean-token-sum`       | sum_b sum_t(L m) / (global_num_seqs or S) * dp_size            |
| `seq-mean-token-mean`      | sum_b [sum_t(L m) / (sum_t m + 1e-8)] / (global_num_seqs or S) * dp_size |
| `seq-mean-token-sum-norm`  | seq-mean-token-sum / (loss_scale_factor or T)                  |

Exact global normalisation: pass the valid-token count (`global_num_tokens`) or valid-sequence count
(`global_num_seqs`) of the whole mini-batch, over all data-parallel shards and micro-batches. Then the *sum* of
the per-micro-batch (and per-shard) results equals the loss of the whole mini-batch computed at once, so gradient
accumulation and sharding do not change the loss. `dp_size` reproduces verl's convention for frameworks that
*average* gradients over data-parallel ranks (multiply by the number of ranks); leave it at 1 when summing.
DAPO's token-level loss (DAPO section 3.3) is `token-mean`. A denominator below 1 (an all-padding micro-batch
without global counts) is floored at 1, so such a batch contributes 0 instead of verl's NaN.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from prorl_jax.algorithms import _groups
from prorl_jax.algorithms import masked

AGG_MODES = ("token-mean", "token-sum", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm")


def check_agg_mode(mode: str) -> None:
  if mode not in AGG_MODES:
    raise ValueError(f"Unknown loss aggregation mode {mode!r} (`agg_mode`/`loss_agg_mode`); choose one of "
                     f"{AGG_MODES}.")


def agg_loss(values: jax.Array, mask: jax.Array, mode: str, *, global_num_tokens: jax.Array | float | None = None,
             global_num_seqs: jax.Array | float | None = None, loss_scale_factor: float | None = None,
             dp_size: int = 1) -> jax.Array:
  """Aggregates a token loss matrix `values[B, T]` under `mask[B, T]` into a float32 scalar (table above).

  Args:
    values: `[B, T]` per-token loss.
    mask: `[B, T]` valid-token mask (bool or 0/1).
    mode: one of `AGG_MODES` (static).
    global_num_tokens: valid tokens in the whole mini-batch (token modes); default: this call's sum(mask).
    global_num_seqs: valid sequences in the whole mini-batch (seq modes); default: this call's S.
    loss_scale_factor: divisor of `seq-mean-token-sum-norm`; default: the padded horizon T. Set a constant to keep
      the normalisation fixed when T varies between batches.
    dp_size: multiplier for gradient-averaging data parallelism (verl); 1 when per-shard losses are summed.
  """
  check_agg_mode(mode)
  _groups.check_rank("values", values, 2, "[B, T]")
  _groups.check_same_shape("values", values, "mask", mask)
  values = jnp.asarray(values, jnp.float32)
  m = _groups.float_mask(mask)
  if mode == "token-mean":
    denom = jnp.sum(m) if global_num_tokens is None else jnp.asarray(global_num_tokens, jnp.float32)
    return masked.masked_sum(values, m) / jnp.maximum(denom, 1.0) * dp_size
  if mode == "token-sum":
    return masked.masked_sum(values, m) * dp_size
  tokens_per_seq = jnp.sum(m, axis=-1)
  seq_mask = (tokens_per_seq > 0).astype(jnp.float32)
  seq_sum = masked.masked_sum(values, m, axis=-1)
  seq_losses = seq_sum / (tokens_per_seq + masked.MEAN_EPS) if mode == "seq-mean-token-mean" else seq_sum
  denom = jnp.sum(seq_mask) if global_num_seqs is None else jnp.asarray(global_num_seqs, jnp.float32)
  loss = masked.masked_sum(seq_losses, seq_mask) / jnp.maximum(denom, 1.0) * dp_size
  if mode == "seq-mean-token-sum-norm":
    loss = loss / (values.shape[-1] if loss_scale_factor is None else loss_scale_factor)
  return loss


def global_counts(mask: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(valid tokens, valid sequences) of a `[B, T]` mask: the counts to pass as the global normalisers.

  Compute them over the whole mini-batch before splitting it into micro-batches (or `psum` them over shards).
  """
  _groups.check_rank("mask", mask, 2, "[B, T]")
  m = _groups.float_mask(mask)
  return jnp.sum(m), jnp.sum((jnp.sum(m, axis=-1) > 0).astype(jnp.float32))
