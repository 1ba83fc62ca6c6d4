"""The logical axes of the model's arrays, and the layout hints the model gives inside a jitted step.

The model names what each dimension of its arrays *is* (`PARAM_AXES`, `KV_CACHE_AXES`, `ACTIVATION_AXES`); which
mesh axes a logical axis is split over is decided elsewhere, by the rules a `Layout` carries (`prorl_jax.parallel`
builds them: `parallel.TRAIN_LAYOUT`). The model receives a layout as an argument (`forward(..., layout=...)`) and
asks it for the `PartitionSpec` of an array under the context mesh (`jax.set_mesh`), as nanodo's and MaxText's
models name logical axes and leave the rules to the trainer. `NO_LAYOUT`, the default, gives no hints: the model
then runs as plain XLA, which is exact on one device and what GSPMD propagates from the arguments elsewhere.
"""

from __future__ import annotations

from typing import Mapping, Protocol, Sequence

import jax
from jax.sharding import PartitionSpec

from prorl_jax.models.config import Qwen2Config

# Every parameter of Qwen2 (`prorl_jax.models.qwen2`), `layers_{i}` written as `layers`. H = hidden_size,
# V = vocab_size, I = intermediate_size, Hq / Hkv = query / kv heads, D = head_dim. None = never split.
PARAM_AXES: Mapping[str, tuple[str | None, ...]] = {
    "embed_tokens/embedding": ("vocab", "embed"),  # [V, H]
    "layers/input_layernorm/weight": (None,),  # [H]
    "layers/self_attn/q_proj/kernel": ("embed", "heads"),  # [H, Hq*D]
    "layers/self_attn/q_proj/bias": ("heads",),  # [Hq*D]
    "layers/self_attn/k_proj/kernel": ("embed", "kv_heads"),  # [H, Hkv*D]
    "layers/self_attn/k_proj/bias": ("kv_heads",),  # [Hkv*D]
    "layers/self_attn/v_proj/kernel": ("embed", "kv_heads"),  # [H, Hkv*D]
    "layers/self_attn/v_proj/bias": ("kv_heads",),  # [Hkv*D]
    "layers/self_attn/o_proj/kernel": ("heads", "embed"),  # [Hq*D, H]
    "layers/post_attention_layernorm/weight": (None,),  # [H]
    "layers/mlp/gate_proj/kernel": ("embed", "mlp"),  # [H, I]
    "layers/mlp/up_proj/kernel": ("embed", "mlp"),  # [H, I]
    "layers/mlp/down_proj/kernel": ("mlp", "embed"),  # [I, H]
    "norm/weight": (None,),  # [H]
    "lm_head/kernel": ("embed", "vocab"),  # [H, V] (absent with tied embeddings)
}
KV_CACHE_AXES = ("batch", None, "kv_heads")  # [B, S, Hkv * D] per layer, keys and values (split by whole heads)
ACTIVATION_AXES = ("batch",)  # dim 0 of the residual stream [B, T, H]; the other dims are never split


def head_units(config: Qwen2Config) -> dict[str, int]:
  """Elements per indivisible block of the head axes: a split never cuts a head."""
  return {"heads": config.dims_per_head, "kv_heads": config.dims_per_head}


class Layout(Protocol):
  """Maps logical axes to a `PartitionSpec` under the context mesh (`prorl_jax.parallel.LogicalLayout`).

  `spec` returns None where there is nothing to pin (no context mesh, or a mesh of one device). Implementations
  are hashable: a layout is part of the jitted function's static arguments.
  """

  def spec(self, shape: Sequence[int], logical: Sequence[str | None], units: Mapping[str, int] | None = None,
           name: str = "array") -> PartitionSpec | None:
    ...


class _NoLayout:
  """No hints: every array is left to XLA."""

  def spec(self, shape, logical, units=None, name="array"):
    del shape, logical, units, name
    return None

  def __repr__(self) -> str:
    return "NO_LAYOUT"


NO_LAYOUT: Layout = _NoLayout()


def constrain_activations(layout: Layout, x: jax.Array) -> jax.Array:
  """Pins the rows (dim 0) of an activation `[B, ...]` where `layout` splits "batch"; the identity when it gives
  no spec. Under FSDP this makes XLA gather weights rather than split activations along the hidden dim."""
  spec = layout.spec(x.shape, ACTIVATION_AXES + (None,) * (x.ndim - 1), name="activations")
  return x if spec is None else jax.lax.with_sharding_constraint(x, spec)


def kv_cache_spec(layout: Layout, config: Qwen2Config, batch_size: int, cache_len: int) -> PartitionSpec | None:
  """The spec of one `[B, S, Hkv * D]` cache array under `layout` (None without a multi-device context mesh)."""
  shape = (batch_size, cache_len, config.num_key_value_heads * config.dims_per_head)
  return layout.spec(shape, KV_CACHE_AXES, head_units(config), name="kv_cache")
