"""The Qwen2 policy model: architecture, Hugging Face interop, tokenizer.

Public API:
  load_hf(path, dtype=jnp.float32) -> (config, params)
  load_architecture(path_or_hub_id) -> (config, source)   (no weights: for planning)
  forward(config, params, input_ids, attention_mask=None, layout=NO_LAYOUT) -> float32 logits [batch, time, vocab]
  prefill / decode_step / init_cache: the KV-cache path the sampler runs
  save_hf(config, params, out_dir)
  PARAM_AXES, KV_CACHE_AXES, ACTIVATION_AXES, Layout: the logical axes of the model's arrays (`models.axes`)

The column decode layout (`models.decode_columns`) is the sampler's CPU path; its pieces are used through that
module, not re-exported here.
"""

from prorl_jax.models.architectures import KNOWN_ARCHITECTURES, load_architecture
from prorl_jax.models.axes import (ACTIVATION_AXES, KV_CACHE_AXES, NO_LAYOUT, PARAM_AXES, Layout,
                                   constrain_activations, head_units, kv_cache_spec)
from prorl_jax.models.config import ConfigError, Qwen2Config
from prorl_jax.models.decode_columns import column_copy_bytes, resolve_decode_layout
from prorl_jax.models.hf_io import CheckpointError, load_hf, param_layout, save_hf
from prorl_jax.models.qwen2 import (KVCache, Params, decode_step, default_positions, forward, head_weight,
                                    hidden_states, init_cache, init_params, prefill, project_to_vocab)
from prorl_jax.models.tokenizer import ChatTemplateError, apply_chat_template, load_tokenizer

__all__ = [
    "ACTIVATION_AXES", "ChatTemplateError", "CheckpointError", "ConfigError", "KNOWN_ARCHITECTURES", "KVCache",
    "KV_CACHE_AXES", "Layout", "NO_LAYOUT", "PARAM_AXES", "Params", "Qwen2Config", "apply_chat_template",
    "column_copy_bytes", "constrain_activations", "decode_step", "default_positions", "forward", "head_units",
    "head_weight", "hidden_states", "init_cache", "init_params", "kv_cache_spec", "load_architecture", "load_hf",
    "load_tokenizer", "param_layout", "prefill", "project_to_vocab", "resolve_decode_layout", "save_hf",
]
