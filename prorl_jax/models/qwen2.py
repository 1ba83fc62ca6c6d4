"""The Qwen2 causal LM in Flax Linen, and the pure functions the rest of prorl_jax calls.

Params are the plain nested dict Linen creates (no `{"params": ...}` wrapper), named like Hugging Face's
checkpoint: `embed_tokens/embedding`, `layers_{i}/self_attn/q_proj/{kernel,bias}`, ..., `norm/weight`,
`lm_head/kernel` (absent when embeddings are tied).

KV cache layout ("ragged"): row b's token at position p lives at cache index p, so a row's valid cache is the
prefix `[0, length_b)`. Prompts are therefore prefilled right-padded; each row then decodes at its own position.
This is what lets the decode-attention kernel skip everything past each row's length. Heads are stored merged,
`[B, S, Hkv * D]`: the layout the TPU decode kernel reads blocks of (a `[.., Hkv, D]` array is tiled differently on
TPU, and XLA would copy the whole cache into the kernel's layout on every step); a `[B, S, Hkv, D]` view of it is free
on CPUs and GPUs.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from prorl_jax.models.axes import NO_LAYOUT, Layout, constrain_activations
from prorl_jax.models.config import Qwen2Config
from prorl_jax.models.layers import DecoderLayer, RMSNorm, rotary_cos_sin

Params = dict[str, Any]


@flax.struct.dataclass
class KVCache:
  """Per-layer key/value caches, each `[batch, max_len, kv_heads * head_dim]` in the compute dtype."""

  keys: tuple[jax.Array, ...]
  values: tuple[jax.Array, ...]

  @property
  def max_len(self) -> int:
    return self.keys[0].shape[1]

  @property
  def batch_size(self) -> int:
    return self.keys[0].shape[0]


class Qwen2(nn.Module):
  """Qwen2ForCausalLM up to the final norm. Methods: `hidden` (training forward), `prefill`, `decode`.

  The LM head is applied outside the module (`project_to_vocab`) so callers can chunk it over tokens. `layout`
  (`models.axes`) pins activation rows and lays out the decode kernel under a multi-device context mesh.
  """

  config: Qwen2Config
  layout: Layout = NO_LAYOUT

  def setup(self):
    c = self.config
    self.embed_tokens = nn.Embed(c.vocab_size, c.hidden_size, dtype=c.compute_dtype,
                                 embedding_init=nn.initializers.normal(stddev=c.initializer_range))
    layer = nn.remat(DecoderLayer, prevent_cse=True) if c.remat else DecoderLayer
    self.layers = [layer(c, name=f"layers_{i}") for i in range(c.num_hidden_layers)]
    self.norm = RMSNorm(c.rms_norm_eps, c.compute_dtype)
    if not c.tie_word_embeddings:
      self.lm_head = nn.Dense(c.vocab_size, use_bias=False, dtype=c.compute_dtype,
                              kernel_init=nn.initializers.normal(stddev=c.initializer_range))

  def hidden(self, input_ids, positions, mask):
    """Final-normed hidden states `[B, T, H]` for ids `[B, T]`, positions `[B, T]`, mask `[B, T, T]`."""
    x, _ = self._layers(input_ids, positions, mask)
    return x

  def _layers(self, input_ids, positions, mask):
    x = self.embed_tokens(input_ids)
    cos, sin = rotary_cos_sin(positions, self.config.dims_per_head, self.config.rope_theta)
    kvs = []
    for layer in self.layers:
      x, kv = layer(constrain_activations(self.layout, x), cos, sin, mask)
      kvs.append(kv)
    return constrain_activations(self.layout, self.norm(x)), kvs

  def prefill(self, input_ids, positions, mask):
    """Like `hidden`, also returning each layer's (k, v) `[B, T, Hkv, D]` for the cache."""
    return self._layers(input_ids, positions, mask)

  def decode(self, tokens, positions, cache: KVCache, attend_lengths):
    """One token per row: tokens, positions `[B]` -> (hidden `[B, H]`, updated cache)."""
    x = self.embed_tokens(tokens[:, None])
    cos, sin = rotary_cos_sin(positions[:, None], self.config.dims_per_head, self.config.rope_theta)
    keys, values = [], []
    for layer, k_cache, v_cache in zip(self.layers, cache.keys, cache.values):
      x, k_cache, v_cache = layer.decode(x, cos, sin, k_cache, v_cache, positions, attend_lengths, self.layout)
      keys.append(k_cache)
      values.append(v_cache)
    return self.norm(x)[:, 0], KVCache(tuple(keys), tuple(values))

  def init_all(self, input_ids, positions, mask):
    """Touches every parameter (used only by `init_params`)."""
    x = self.hidden(input_ids, positions, mask)
    if self.config.tie_word_embeddings:
      return self.embed_tokens.attend(x)
    return self.lm_head(x)


def project_to_vocab(config: Qwen2Config, hidden: jax.Array, head_weight: jax.Array) -> jax.Array:
  """hidden `[..., H]` @ head `[H, V]` in the compute dtype with float32 accumulation -> float32 logits."""
  dtype = config.compute_dtype
  return jnp.dot(hidden.astype(dtype), head_weight.astype(dtype), preferred_element_type=jnp.float32)


def _module(config: Qwen2Config, layout: Layout = NO_LAYOUT) -> Qwen2:
  return Qwen2(config, layout)


def _causal_mask(attention_mask: jax.Array) -> jax.Array:
  """bool `[B, T, T]`: query t may see key s iff s <= t and key s is a real token."""
  t = attention_mask.shape[1]
  causal = jnp.tril(jnp.ones((t, t), dtype=bool))
  return causal[None] & attention_mask.astype(bool)[:, None, :]


def default_positions(attention_mask: jax.Array) -> jax.Array:
  """Position ids `[B, T]` counting only real tokens (0 at each row's first token), as HF `generate` does.

  Rotary attention depends only on position differences, so left- or right-padded rows get the logits of the
  unpadded sequence.
  """
  return jnp.maximum(jnp.cumsum(attention_mask.astype(jnp.int32), axis=1) - 1, 0)


def init_params(config: Qwen2Config, rng: jax.Array, dtype: Any = jnp.float32) -> Params:
  """Random parameters (normal(0, initializer_range) weights, zero biases, unit norms) in `dtype`."""
  ids = jnp.zeros((1, 2), jnp.int32)
  mask = jnp.ones((1, 2), bool)
  variables = jax.jit(_module(config).init, static_argnames="method")(
      rng, ids, default_positions(mask), _causal_mask(mask), method=Qwen2.init_all)
  return jax.tree.map(lambda p: p.astype(dtype), variables["params"])


def _prepare(input_ids, attention_mask, positions):
  input_ids = jnp.asarray(input_ids)
  if input_ids.ndim != 2:
    raise ValueError(f"input_ids must be [batch, time], got shape {input_ids.shape}")
  if attention_mask is None:
    attention_mask = jnp.ones(input_ids.shape, bool)
  attention_mask = jnp.asarray(attention_mask)
  if attention_mask.shape != input_ids.shape:
    raise ValueError(f"attention_mask shape {attention_mask.shape} != input_ids shape {input_ids.shape}")
  if positions is None:
    positions = default_positions(attention_mask)
  return input_ids, attention_mask, positions


def hidden_states(config: Qwen2Config, params: Params, input_ids: jax.Array, attention_mask: jax.Array | None = None,
                  positions: jax.Array | None = None, *, layout: Layout = NO_LAYOUT) -> jax.Array:
  """Final-normed hidden states `[batch, time, hidden]` in the compute dtype (pair with `head_weight`)."""
  input_ids, attention_mask, positions = _prepare(input_ids, attention_mask, positions)
  return _module(config, layout).apply({"params": params}, input_ids, positions, _causal_mask(attention_mask),
                               method=Qwen2.hidden)


def head_weight(config: Qwen2Config, params: Params) -> jax.Array:
  """The LM-head matrix `[hidden, vocab]` (the embedding's transpose when tied), in the params dtype."""
  if config.tie_word_embeddings:
    return params["embed_tokens"]["embedding"].T
  return params["lm_head"]["kernel"]


def forward(config: Qwen2Config, params: Params, input_ids: jax.Array,
            attention_mask: jax.Array | None = None, positions: jax.Array | None = None, *,
            layout: Layout = NO_LAYOUT) -> jax.Array:
  """Causal LM logits, float32 `[batch, time, vocab]`.

  Args:
    config: the architecture (hashable; usable as a static or ordinary jit argument).
    params: parameters from `load_hf` or `init_params`.
    input_ids: int `[batch, time]`.
    attention_mask: `[batch, time]`, 1/True on real tokens; left or right padding. Logits at padded positions are
      finite but meaningless.
    positions: optional explicit position ids `[batch, time]`; by default real tokens count from 0 per row.
    layout: how activations are pinned under a multi-device context mesh (`parallel.TRAIN_LAYOUT`); the default
      gives XLA no hints.
  """
  hidden = hidden_states(config, params, input_ids, attention_mask, positions, layout=layout)
  return project_to_vocab(config, hidden, head_weight(config, params))


def init_cache(config: Qwen2Config, batch_size: int, max_len: int, dtype: Any = None) -> KVCache:
  """An empty KV cache for `batch_size` rows of up to `max_len` tokens (prompt + response), `[B, S, Hkv * D]`."""
  dtype = config.compute_dtype if dtype is None else dtype
  shape = (batch_size, max_len, config.num_key_value_heads * config.dims_per_head)
  zeros = tuple(jnp.zeros(shape, dtype) for _ in range(config.num_hidden_layers))
  return KVCache(keys=zeros, values=tuple(jnp.zeros(shape, dtype) for _ in range(config.num_hidden_layers)))


def prefill(config: Qwen2Config, params: Params, input_ids: jax.Array, lengths: jax.Array, cache: KVCache, *,
            layout: Layout = NO_LAYOUT) -> tuple[jax.Array, KVCache]:
  """Runs right-padded prompts through the model and fills the start of `cache`.

  Args:
    input_ids: int `[batch, prompt_time]`, row b's prompt in `[:, :lengths[b]]`, anything after it.
    lengths: int `[batch]`, each >= 1.
    cache: from `init_cache`, `max_len >= prompt_time`.

  Returns:
    (float32 logits `[batch, vocab]` for the token after each prompt, cache holding the prompts' keys/values).
  """
  b, t = input_ids.shape
  if t > cache.max_len:
    raise ValueError(f"prompt length {t} exceeds the KV cache length {cache.max_len}")
  mask = jnp.arange(t)[None, :] < lengths[:, None]
  positions = jnp.broadcast_to(jnp.arange(t), (b, t))
  module = _module(config, layout)
  hidden, kvs = module.apply({"params": params}, input_ids, positions, _causal_mask(mask), method=Qwen2.prefill)
  last = hidden[jnp.arange(b), jnp.maximum(lengths - 1, 0)]
  merge = lambda x, into: x.reshape(b, t, -1).astype(into.dtype)
  keys = tuple(kc.at[:, :t].set(merge(k, kc)) for kc, (k, _) in zip(cache.keys, kvs))
  values = tuple(vc.at[:, :t].set(merge(v, vc)) for vc, (_, v) in zip(cache.values, kvs))
  return project_to_vocab(config, last, head_weight(config, params)), KVCache(keys, values)


def decode_step(config: Qwen2Config, params: Params, tokens: jax.Array, positions: jax.Array, cache: KVCache,
                active: jax.Array | None = None, head: jax.Array | None = None, *,
                layout: Layout = NO_LAYOUT) -> tuple[jax.Array, KVCache]:
  """Feeds one token per row and returns the next-token logits.

  Args:
    tokens: int `[batch]`, the token at `positions[b]` of row b.
    positions: int `[batch]`; the token's key/value is written to cache index `positions[b]` and the row attends to
      cache `[0, positions[b]]`.
    cache: the KV cache holding every earlier position of each row.
    active: optional bool `[batch]`; inactive rows (finished sequences) skip attention work and get meaningless
      logits.
    head: optional LM-head matrix `[hidden, vocab]` to use instead of `head_weight(config, params)` (a decode loop
      passes one it laid out once, outside the loop).
    layout: lays out the decode-attention kernel per shard under a multi-device context mesh
      (`parallel.TRAIN_LAYOUT`); with the default a Pallas kernel runs unpartitioned.

  Returns:
    (float32 logits `[batch, vocab]`, updated cache).
  """
  attend = positions + 1
  if active is not None:
    attend = jnp.where(active, attend, 0)
  hidden, cache = _module(config, layout).apply({"params": params}, tokens, positions, cache, attend,
                                                method=Qwen2.decode)
  head = head_weight(config, params) if head is None else head
  return project_to_vocab(config, hidden, head), cache
