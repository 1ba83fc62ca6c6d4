"""How one decode step runs: the decoder of a layout, chosen once when a sampler is built.

A decoder lays the weights out for its step (`prepare`, once per generate call), converts freshly prefilled rows to
its cache layout (`cache_from_rows`), runs one step for every slot (`step`) and picks tokens from the logits that
step makes (`select`). The slot loop (`prorl_jax.rollout.slots`) knows nothing else of layouts.

  rows     `models.decode_step`: activations `[B, features]`, caches `[B, S, Hkv * D]`, the decode-attention kernel
           (Pallas on TPU / GPU, run per shard under a mesh, XLA's reference on CPU).
  columns  `decode_columns.decode_step_columns`: feature-major activations, `[out, in]` weights, transposed caches, the
           native CPU kernels (`kernels.column_matmul`, `kernels.column_attention`); one CPU device only. Its cache
           can grow in phases (`windows`), so the attention reads no more positions than the rows have reached.

`choose_decoder` resolves "auto" (columns on one CPU device with the reference attention, rows elsewhere) for the
platform the programs are compiled for.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp

from prorl_jax import models, parallel
from prorl_jax.models import decode_columns
from prorl_jax.rollout.sampling import SamplingParams, select_tokens, select_tokens_vocab_major


@dataclasses.dataclass(frozen=True)
class RowsDecoder:
  """`models.decode_step` on `[B, S, Hkv * D]` caches (see the module docstring)."""

  config: models.Qwen2Config
  platform: str
  name: str = "rows"

  def prepare(self, params: models.Params) -> Any:
    """(params, a materialised LM head `[H, V]` or None) for the step. A tied head is the embedding's transpose,
    which XLA folds into the step's dot; XLA:CPU's matmul runs about 30% slower on that transposed operand at decode
    batch sizes, so on CPU the head is a copy. Accelerators take either layout at full speed: no copy (it would cost
    vocab x hidden more memory)."""
    if self.config.tie_word_embeddings and self.platform == "cpu":
      return params, models.head_weight(self.config, params).copy()
    return params, None

  def windows(self, filled: int, cache_len: int) -> tuple[int, ...]:
    del filled
    return (cache_len,)

  def cache_from_rows(self, cache: models.KVCache, length: int) -> models.KVCache:
    """Prefilled rows' caches (their prompt positions) zero-padded to `length` positions."""
    pad = lambda x: jnp.pad(x, ((0, 0), (0, length - x.shape[1]), (0, 0)))
    return jax.tree.map(pad, cache)

  def cache_to_rows(self, cache: models.KVCache) -> models.KVCache:
    return cache

  def empty_cache(self, rows: int, length: int) -> models.KVCache:
    return models.init_cache(self.config, rows, length)

  def grow(self, cache: models.KVCache, length: int) -> models.KVCache:
    assert cache.max_len == length, "the rows layout decodes over the whole cache"
    return cache

  def step(self, weights: Any, tokens: jax.Array, positions: jax.Array, cache: Any, active: jax.Array):
    params, head = weights
    return models.decode_step(self.config, params, tokens, positions, cache, active=active, head=head,
                              layout=parallel.TRAIN_LAYOUT)

  def select(self, logits: jax.Array, keys: jax.Array, sampling: SamplingParams):
    return select_tokens(logits, keys, sampling)


@dataclasses.dataclass(frozen=True)
class ColumnsDecoder:
  """`decode_columns.decode_step_columns` on column caches (see the module docstring)."""

  config: models.Qwen2Config
  platform: str = "cpu"
  name: str = "columns"

  def prepare(self, params: models.Params) -> decode_columns.ColumnWeights:
    # Laid out once; the barrier keeps XLA from folding the transposes back into each step's dots.
    return jax.lax.optimization_barrier(decode_columns.column_weights(self.config, params))

  def windows(self, filled: int, cache_len: int) -> tuple[int, ...]:
    return decode_columns.decode_windows(filled, cache_len)

  def cache_from_rows(self, cache: models.KVCache, length: int) -> decode_columns.ColumnCache:
    """Prefilled rows (their prompts in the first positions) in the column layout, `length` positions long."""
    cols = decode_columns.to_column_cache(self.config, cache, min(length, cache.max_len))
    return decode_columns.grow_column_cache(cols, length) if length > cache.max_len else cols

  def cache_to_rows(self, cache: decode_columns.ColumnCache) -> models.KVCache:
    return decode_columns.from_column_cache(cache)

  def empty_cache(self, rows: int, length: int) -> decode_columns.ColumnCache:
    return self.cache_from_rows(models.init_cache(self.config, rows, 1), length)

  def grow(self, cache: decode_columns.ColumnCache, length: int) -> decode_columns.ColumnCache:
    return decode_columns.grow_column_cache(cache, length)

  def step(self, weights: decode_columns.ColumnWeights, tokens: jax.Array, positions: jax.Array, cache: Any,
           active: jax.Array):
    return decode_columns.decode_step_columns(self.config, weights, tokens, positions, cache, active=active)

  def select(self, logits: jax.Array, keys: jax.Array, sampling: SamplingParams):
    return select_tokens_vocab_major(logits, keys, sampling)  # the column step's logits are [V, B]


def cache_length(cache: Any) -> int:
  """Positions of a rows (`[B, S, F]`) or column (`[B, Hkv, D, S]`) cache."""
  keys = cache.keys[0]
  return keys.shape[-1] if keys.ndim == 4 else keys.shape[1]


@functools.lru_cache(maxsize=None)
def choose_decoder(config: models.Qwen2Config, decode_layout: str, num_devices: int, platform: str):
  """The decoder for `decode_layout` ("auto", "rows", "columns") on `num_devices` devices of `platform`."""
  layout = models.resolve_decode_layout(config, decode_layout, num_devices, platform)
  return ColumnsDecoder(config, platform) if layout == "columns" else RowsDecoder(config, platform)
