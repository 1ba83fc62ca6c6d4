"""A decode step for CPUs: activations feature-major (`[features, batch]`), weights `[out, in]`, keys `[.., D, S]`.

A decode step multiplies a few rows (the batch) by every weight matrix and attends over a small cache per row.
On XLA:CPU both run far below the machine's matmul rate in the usual layouts, for two reasons this module removes:

* Skinny matmuls run faster as `W[out, in] @ x[in, batch]` than as `x[batch, in] @ W[in, out]` (measured: a
  loop of only a 39M-param model's decode matmuls at batch 32 takes 15.9 against 18.8 ms per step), and faster
  still through `kernels.column_matmul`, a native AVX-512 kernel for exactly this product (XLA's dot where it is
  unavailable; 19.4 -> 16.4 ms per decode step). The q/k/v projections are concatenated (one matmul); gate and up
  stay two (with XLA's dot, XLA:CPU runs them side by side on its two threads: 0.7 ms per step faster than one
  concatenated matmul; with the native kernel it makes no difference). The tied LM head reads the embedding
  `[vocab, hidden]` as it is, and the logits stay `[vocab, batch]` for the sampler's vocabulary-major selection.
* `[B, S, Hkv, D]` caches make XLA transpose the whole cache on every step for the attention dots (its batched dot
  wants the batch axes `B, Hkv` outermost), which costs more than the attention. Here keys are stored `[B, Hkv, D,
  S]` and values `[B, Hkv, S, D]`, the layouts of plain `[G, D] x [D, S]` and `[G, S] x [S, D]` products, and
  each step writes one column / row in place.

Figures (2-core development machine, 39M-param Qwen2 fp32, batch 32, 64 + 128 tokens: 25.8-27.7 ms per decode step in
rows, 19.2-20.3 in columns with XLA's dot, ~16.5 with the native matmul) are in the README; `python -m
benchmarks.rollout --decode_layout=rows|columns` reproduces them (`PRORL_JAX_NATIVE_KERNELS=0` for XLA alone).
Rotary angles are looked up per position in a table over the cache's positions (XLA hoists it out of the decode
loop) rather than computed in each layer's q and k fusions, which recomputed them per head.
The step computes the logits of `qwen2.decode_step` (the same products, summed in another order; the tests hold
them to 1e-5). `ColumnWeights` is a transposed copy of the layer matrices and `ColumnCache` a
transposed copy of a prefilled `KVCache`, both made once per decode loop, outside it.
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp

from kernels.column_attention import column_attention
from kernels.column_matmul import column_matmul
from kernels.decode_attention_select import target_platform
from prorl_jax.models.config import Qwen2Config
from prorl_jax.models.layers import rotary_cos_sin
from prorl_jax.models.qwen2 import KVCache, init_params


DECODE_LAYOUTS = ("auto", "rows", "columns")


def resolve_decode_layout(config: Qwen2Config, decode_layout: str, num_devices: int,
                          platform: str | None = None) -> str:
  """"rows" (`qwen2.decode_step`) or "columns" (`decode_step_columns`) for a decode loop over `num_devices` devices
  of `platform` (default `kernels.target_platform()`: the context mesh's devices, else the default backend).

  "auto" is columns on one CPU device when the config's decode attention is the XLA reference (the column step has
  its own jnp attention), rows elsewhere: accelerators run the Pallas kernel on the `[B, S, Hkv, D]` cache, and
  under a multi-device mesh the fused projections would cut across the tensor-parallel split of the heads.
  """
  if decode_layout not in DECODE_LAYOUTS:
    raise ValueError(f"decode_layout must be one of {DECODE_LAYOUTS}, got {decode_layout!r}")
  if decode_layout != "auto":
    return decode_layout
  platform = platform or target_platform()
  cpu_reference = platform == "cpu" and config.attention_impl in ("auto", "reference")
  return "columns" if cpu_reference and num_devices == 1 else "rows"


def column_copy_bytes(config: Qwen2Config, dtype=jnp.float32) -> int:
  """Bytes of `column_weights` for params stored in `dtype`: the sampler prepares them once per generate call, as a
  copy beside the params (embedding and head included)."""
  shapes = jax.eval_shape(lambda: column_weights(config, init_params(config, jax.random.key(0), dtype=dtype)))
  return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(shapes))


@flax.struct.dataclass
class ColumnWeights:
  """Per-layer weights `[out, in]` for `decode_step_columns`; vectors (biases, norm weights) are `[n, 1]` columns.

  `head` is the LM head `[vocab, hidden]`: the embedding itself when tied.
  """

  qkv: tuple[jax.Array, ...]  # [(Hq + 2 Hkv) D, H]: q_proj | k_proj | v_proj
  qkv_bias: tuple[jax.Array, ...]  # [(Hq + 2 Hkv) D, 1]
  o: tuple[jax.Array, ...]  # [H, Hq D]
  gate: tuple[jax.Array, ...]  # [I, H]
  up: tuple[jax.Array, ...]  # [I, H]
  down: tuple[jax.Array, ...]  # [H, I]
  input_norm: tuple[jax.Array, ...]  # [H, 1]
  post_norm: tuple[jax.Array, ...]  # [H, 1]
  final_norm: jax.Array  # [H, 1]
  embedding: jax.Array  # [V, H]
  head: jax.Array  # [V, H]


@flax.struct.dataclass
class ColumnCache:
  """Per-layer caches: keys `[B, Hkv, D, S]`, values `[B, Hkv, S, D]` (position p of row b at index p)."""

  keys: tuple[jax.Array, ...]
  values: tuple[jax.Array, ...]


def column_weights(config: Qwen2Config, params: dict) -> ColumnWeights:
  """The transposed (and q/k/v concatenated) copy of `params` that `decode_step_columns` reads."""
  cols = {k: [] for k in ("qkv", "qkv_bias", "o", "gate", "up", "down", "input_norm", "post_norm")}
  for i in range(config.num_hidden_layers):
    layer = params[f"layers_{i}"]
    attn, mlp = layer["self_attn"], layer["mlp"]
    names = ("q_proj", "k_proj", "v_proj")
    cols["qkv"].append(jnp.concatenate([attn[n]["kernel"] for n in names], axis=1).T)
    cols["qkv_bias"].append(jnp.concatenate([attn[n]["bias"] for n in names])[:, None])
    cols["o"].append(attn["o_proj"]["kernel"].T)
    cols["gate"].append(mlp["gate_proj"]["kernel"].T)
    cols["up"].append(mlp["up_proj"]["kernel"].T)
    cols["down"].append(mlp["down_proj"]["kernel"].T)
    cols["input_norm"].append(layer["input_layernorm"]["weight"][:, None])
    cols["post_norm"].append(layer["post_attention_layernorm"]["weight"][:, None])
  embedding = params["embed_tokens"]["embedding"]
  head = embedding if config.tie_word_embeddings else params["lm_head"]["kernel"].T
  return ColumnWeights(**{k: tuple(v) for k, v in cols.items()}, final_norm=params["norm"]["weight"][:, None],
                       embedding=embedding, head=head)


def to_column_cache(config: Qwen2Config, cache: KVCache, length: int | None = None) -> ColumnCache:
  """A `qwen2.KVCache` (`[B, S, Hkv * D]` per layer) in the column layout, optionally only its first `length`
  positions."""
  length = cache.keys[0].shape[1] if length is None else length
  heads = lambda x: x[:, :length].reshape(x.shape[0], length, config.num_key_value_heads, config.dims_per_head)
  return ColumnCache(tuple(jnp.transpose(heads(k), (0, 2, 3, 1)) for k in cache.keys),
                     tuple(jnp.transpose(heads(v), (0, 2, 1, 3)) for v in cache.values))


def decode_windows(filled: int, cache_len: int, max_phases: int = 4, min_phase: int = 32) -> tuple[int, ...]:
  """Increasing cache lengths for a decode loop in phases, the last `cache_len`.

  A loop whose rows start writing at cache index `filled` (the padded prompt length) runs phase i over a cache of
  the i-th length while every row's next index fits, then grows the cache; the column attention reads its cache's
  whole length, so the phases skip most of the tail no row has reached. The lengths split `(filled, cache_len]`
  evenly into phases of at least `min_phase` positions, at most `max_phases` of them (each compiles the step once
  more): 64 + 128 tokens decode over 96, 128, 160 and 192 positions (measured: ~1 ms of a ~20 ms step saved).
  """
  if not 0 <= filled < cache_len:
    raise ValueError(f"need 0 <= filled < cache_len, got filled={filled}, cache_len={cache_len}")
  phases = max(1, min(max_phases, (cache_len - filled) // min_phase))
  return tuple(filled + -(-(cache_len - filled) * (i + 1) // phases) for i in range(phases))


def grow_column_cache(cache: ColumnCache, length: int) -> ColumnCache:
  """`cache` with its positions axis zero-padded to `length`."""
  pad = lambda x, axis: jnp.pad(x, [(0, length - x.shape[axis]) if a == axis else (0, 0) for a in range(x.ndim)])
  return ColumnCache(tuple(pad(k, 3) for k in cache.keys), tuple(pad(v, 2) for v in cache.values))


def from_column_cache(cache: ColumnCache) -> KVCache:
  """The inverse of `to_column_cache`."""
  merge = lambda x: x.reshape(*x.shape[:2], -1)
  return KVCache(tuple(merge(jnp.transpose(k, (0, 3, 1, 2))) for k in cache.keys),
                 tuple(merge(jnp.transpose(v, (0, 2, 1, 3))) for v in cache.values))


def _rms_norm(x: jax.Array, weight: jax.Array, config: Qwen2Config) -> jax.Array:
  """`layers.RMSNorm` over the feature axis 0 of `x` `[H, B]`."""
  x32 = x.astype(jnp.float32)
  normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=0, keepdims=True) + config.rms_norm_eps)
  return weight.astype(config.compute_dtype) * normed.astype(config.compute_dtype)


def _rotary(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
  """`layers.apply_rotary` on `x` `[heads, D, B]` with tables `[D, B]`."""
  half = x.shape[1] // 2
  return x * cos + jnp.concatenate([-x[:, half:], x[:, :half]], axis=1) * sin


def _matmul(w: jax.Array, x: jax.Array, config: Qwen2Config) -> jax.Array:
  dtype = config.compute_dtype
  return column_matmul(w.astype(dtype), x.astype(dtype))


def decode_step_columns(config: Qwen2Config, weights: ColumnWeights, tokens: jax.Array, positions: jax.Array,
                        cache: ColumnCache, active: jax.Array | None = None) -> tuple[jax.Array, ColumnCache]:
  """`qwen2.decode_step` in the column layouts.

  Args:
    weights: `column_weights(config, params)`.
    tokens: int `[B]`, the token at `positions[b]` of row b; its key/value is written at cache index `positions[b]`
      and the row attends to `[0, positions[b]]`.
    cache: the column cache holding every earlier position of each row.
    active: optional bool `[B]`; inactive rows attend to nothing and get meaningless logits.

  Returns:
    (float32 logits `[V, B]`, vocabulary-major, updated cache).
  """
  c = config
  b = tokens.shape[0]
  d, hq, hkv = c.dims_per_head, c.num_attention_heads, c.num_key_value_heads
  attend = positions + 1 if active is None else jnp.where(active, positions + 1, 0)
  cos_t, sin_t = rotary_cos_sin(jnp.arange(cache.keys[0].shape[-1])[None], d, c.rope_theta)
  cos, sin = cos_t[0][positions].T.astype(c.compute_dtype), sin_t[0][positions].T.astype(c.compute_dtype)
  x = weights.embedding[tokens].astype(c.compute_dtype).T  # [H, B]
  rows = jnp.arange(b)
  keys, values = [], []
  for i, (k_cache, v_cache) in enumerate(zip(cache.keys, cache.values)):
    h = _rms_norm(x, weights.input_norm[i], c)
    qkv = _matmul(weights.qkv[i], h, c) + weights.qkv_bias[i].astype(c.compute_dtype)  # [(Hq + 2 Hkv) D, B]
    q = _rotary(qkv[:hq * d].reshape(hq, d, b), cos, sin)
    k = _rotary(qkv[hq * d:(hq + hkv) * d].reshape(hkv, d, b), cos, sin)
    v = qkv[(hq + hkv) * d:].reshape(hkv, d, b)
    # Advanced indices around a slice put the row axis first: both updates are [B, Hkv, D].
    k_cache = k_cache.at[rows, :, :, positions].set(jnp.transpose(k, (2, 0, 1)).astype(k_cache.dtype), mode="drop")
    v_cache = v_cache.at[rows, :, positions].set(jnp.transpose(v, (2, 0, 1)).astype(v_cache.dtype), mode="drop")
    out = column_attention(jnp.transpose(q, (2, 0, 1)), k_cache, v_cache, attend)
    x = x + _matmul(weights.o[i], out.reshape(b, hq * d).T, c)
    h = _rms_norm(x, weights.post_norm[i], c)
    gate, up = _matmul(weights.gate[i], h, c), _matmul(weights.up[i], h, c)
    x = x + _matmul(weights.down[i], jax.nn.silu(gate) * up, c)
    keys.append(k_cache)
    values.append(v_cache)
  h = _rms_norm(x, weights.final_norm, c)
  logits = (column_matmul(weights.head.astype(c.compute_dtype), h) if c.compute_dtype == jnp.float32 else
            jnp.dot(weights.head.astype(c.compute_dtype), h, preferred_element_type=jnp.float32))  # [V, B]
  # Without the barrier XLA:CPU (jax 0.10) compiles a bf16 head into a dot thunk that rejects bf16 x bf16 -> f32 at
  # run time (tests/test_rollout_sampler.py::test_bf16_sampling_runs); fp32 speed is the same either way.
  return jax.lax.optimization_barrier(logits), ColumnCache(tuple(keys), tuple(values))
