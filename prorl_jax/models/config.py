"""Qwen2 architecture config: a frozen, hashable dataclass that doubles as a static pytree.

Because the class is registered with `jax.tree_util.register_static`, a config can be passed to a jitted function
as an ordinary argument (it becomes part of the trace's static structure), or marked static explicitly.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from prorl_jax.errors import ConfigError

# Runtime-only fields: they choose how the model runs, not what it is, and are never written to config.json.
_RUNTIME_FIELDS = ("dtype", "attention_impl", "remat")
_ATTENTION_IMPLS = ("auto", "pallas", "reference")


@jax.tree_util.register_static
@dataclasses.dataclass(frozen=True)
class Qwen2Config:
  """Qwen2 decoder hyper-parameters (Hugging Face `Qwen2Config` names) plus runtime choices.

  Runtime fields:
    dtype: compute dtype of activations and matmuls ("float32" or "bfloat16"); logits are always float32. The
      parameter dtype is whatever the params pytree holds (see `load_hf(..., dtype=)`).
    attention_impl: decode attention backend, "auto" (Pallas kernel where it lowers, XLA elsewhere), "pallas" or
      "reference".
    remat: rematerialise each decoder layer in the backward pass (saves activation memory in training).
  """

  vocab_size: int = 151936
  hidden_size: int = 1536
  intermediate_size: int = 8960
  num_hidden_layers: int = 28
  num_attention_heads: int = 12
  num_key_value_heads: int = 2
  head_dim: int | None = None
  max_position_embeddings: int = 131072
  rms_norm_eps: float = 1e-6
  rope_theta: float = 10000.0
  tie_word_embeddings: bool = False
  initializer_range: float = 0.02
  bos_token_id: int | None = None
  eos_token_id: int | tuple[int, ...] | None = None
  pad_token_id: int | None = None
  # Runtime.
  dtype: str = "float32"
  attention_impl: str = "auto"
  remat: bool = False

  def __post_init__(self):
    for name in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                 "num_key_value_heads"):
      value = getattr(self, name)
      if not isinstance(value, int) or value <= 0:
        raise ConfigError(f"Qwen2Config.{name} must be a positive integer, got {value!r}")
    if self.num_attention_heads % self.num_key_value_heads:
      raise ConfigError(
          f"Qwen2Config.num_attention_heads ({self.num_attention_heads}) must be a multiple of "
          f"num_key_value_heads ({self.num_key_value_heads}) for grouped-query attention")
    if self.head_dim is None and self.hidden_size % self.num_attention_heads:
      raise ConfigError(
          f"Qwen2Config.hidden_size ({self.hidden_size}) is not divisible by num_attention_heads "
          f"({self.num_attention_heads}); set head_dim explicitly")
    if self.head_dim is not None and self.head_dim % 2:
      raise ConfigError(f"Qwen2Config.head_dim must be even for rotary embeddings, got {self.head_dim}")
    if self.dtype not in ("float32", "bfloat16", "float16"):
      raise ConfigError(f"Qwen2Config.dtype must be 'float32', 'bfloat16' or 'float16', got {self.dtype!r}")
    if self.attention_impl not in _ATTENTION_IMPLS:
      raise ConfigError(f"Qwen2Config.attention_impl must be one of {_ATTENTION_IMPLS}, got {self.attention_impl!r}")
    if isinstance(self.eos_token_id, list):
      object.__setattr__(self, "eos_token_id", tuple(self.eos_token_id))

  @property
  def dims_per_head(self) -> int:
    return self.head_dim if self.head_dim is not None else self.hidden_size // self.num_attention_heads

  @property
  def compute_dtype(self) -> jnp.dtype:
    return jnp.dtype(self.dtype)

  @property
  def eos_token_ids(self) -> tuple[int, ...]:
    if self.eos_token_id is None:
      return ()
    return self.eos_token_id if isinstance(self.eos_token_id, tuple) else (self.eos_token_id,)

  def replace(self, **changes: Any) -> "Qwen2Config":
    return dataclasses.replace(self, **changes)

  def num_params(self) -> int:
    """Parameter count of the model this config describes (embeddings and head included)."""
    h, d, hq, hkv = self.hidden_size, self.dims_per_head, self.num_attention_heads, self.num_key_value_heads
    attn = h * hq * d + hq * d + 2 * (h * hkv * d + hkv * d) + hq * d * h
    mlp = 3 * h * self.intermediate_size
    per_layer = attn + mlp + 2 * h
    head = 0 if self.tie_word_embeddings else h * self.vocab_size
    return self.vocab_size * h + self.num_hidden_layers * per_layer + h + head

  # --- Hugging Face config.json ---------------------------------------------------------------------------------

  @classmethod
  def from_hf_dict(cls, hf: dict[str, Any], source: str = "config.json", **runtime: Any) -> "Qwen2Config":
    """Builds a config from a Hugging Face `config.json` dict (transformers 4.x and 5.x layouts)."""
    model_type = hf.get("model_type")
    if model_type != "qwen2":
      archs = hf.get("architectures")
      raise ConfigError(
          f"{source}: model_type is {model_type!r} (architectures {archs}); prorl_jax loads Qwen2 checkpoints "
          "(model_type 'qwen2', e.g. nvidia/Nemotron-Research-Reasoning-Qwen-1.5B)")
    if hf.get("use_sliding_window"):
      raise ConfigError(f"{source}: use_sliding_window=true is not supported; set it to false (Qwen2 reasoning "
                        "checkpoints such as DeepSeek-R1-Distill-Qwen-1.5B do not use it)")
    act = hf.get("hidden_act", "silu")
    if act != "silu":
      raise ConfigError(f"{source}: hidden_act {act!r} is not supported (Qwen2 uses 'silu')")
    rope = hf.get("rope_parameters") or {}
    scaling = hf.get("rope_scaling")
    rope_type = rope.get("rope_type") or (scaling or {}).get("rope_type") or (scaling or {}).get("type")
    if rope_type not in (None, "default"):
      raise ConfigError(f"{source}: rope type {rope_type!r} is not supported; only the default rotary embedding "
                        "(no rope_scaling) is implemented")
    theta = rope.get("rope_theta", hf.get("rope_theta"))
    if theta is None:
      theta = 10000.0
    for required in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads"):
      if required not in hf:
        raise ConfigError(f"{source}: required field {required!r} is missing")
    return cls(
        vocab_size=int(hf["vocab_size"]),
        hidden_size=int(hf["hidden_size"]),
        intermediate_size=int(hf["intermediate_size"]),
        num_hidden_layers=int(hf["num_hidden_layers"]),
        num_attention_heads=int(hf["num_attention_heads"]),
        num_key_value_heads=int(hf.get("num_key_value_heads") or hf["num_attention_heads"]),
        head_dim=hf.get("head_dim"),
        max_position_embeddings=int(hf.get("max_position_embeddings", 32768)),
        rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
        rope_theta=float(theta),
        tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
        initializer_range=float(hf.get("initializer_range", 0.02)),
        bos_token_id=hf.get("bos_token_id"),
        eos_token_id=hf.get("eos_token_id"),
        pad_token_id=hf.get("pad_token_id"),
        **runtime,
    )

  def to_hf_dict(self, torch_dtype: str = "float32") -> dict[str, Any]:
    """The `config.json` contents that `transformers.AutoConfig` reads back into an equal Qwen2 config."""
    out = {
        "architectures": ["Qwen2ForCausalLM"],
        "model_type": "qwen2",
        "vocab_size": self.vocab_size,
        "hidden_size": self.hidden_size,
        "intermediate_size": self.intermediate_size,
        "num_hidden_layers": self.num_hidden_layers,
        "num_attention_heads": self.num_attention_heads,
        "num_key_value_heads": self.num_key_value_heads,
        "hidden_act": "silu",
        "max_position_embeddings": self.max_position_embeddings,
        "rms_norm_eps": self.rms_norm_eps,
        # Both layouts: transformers 4.x reads rope_theta, 5.x reads rope_parameters (and converts rope_theta).
        "rope_theta": self.rope_theta,
        "rope_parameters": {"rope_theta": self.rope_theta, "rope_type": "default"},
        "tie_word_embeddings": self.tie_word_embeddings,
        "initializer_range": self.initializer_range,
        "use_sliding_window": False,
        "attention_dropout": 0.0,
        "use_cache": True,
        "bos_token_id": self.bos_token_id,
        "eos_token_id": list(self.eos_token_id) if isinstance(self.eos_token_id, tuple) else self.eos_token_id,
        "pad_token_id": self.pad_token_id,
        "torch_dtype": torch_dtype,
        "dtype": torch_dtype,
    }
    if self.head_dim is not None:
      out["head_dim"] = self.head_dim
    return out
