"""The Qwen2 policy model: architecture, Hugging Face interop, tokenizer.

Public API:
  load_hf(path, dtype=jnp.float32) -> (config, params)
  load_architecture(path_or_hub_id) -> (config, source)   (no weights: for planning)
  forward(config, params, input_ids, attention_mask=None) -> float32 logits [batch, time, vocab]
  save_hf(config, params, out_dir)
"""

from prorl_jax.models.architectures import KNOWN_ARCHITECTURES, load_architecture
from prorl_jax.models.config import ConfigError, Qwen2Config
from prorl_jax.models.decode_columns import (DECODE_LAYOUTS, ColumnCache, ColumnWeights, column_copy_bytes,
                                             column_weights, decode_step_columns, decode_windows, from_column_cache,
                                             grow_column_cache, resolve_decode_layout, to_column_cache)
from prorl_jax.models.hf_io import CheckpointError, load_hf, param_layout, save_hf
from prorl_jax.models.qwen2 import (KVCache, Params, decode_step, default_positions, forward, head_weight,
                                    hidden_states, init_cache, init_params, prefill, project_to_vocab)
from prorl_jax.models.tokenizer import ChatTemplateError, apply_chat_template, load_tokenizer

__all__ = [
    "ChatTemplateError", "CheckpointError", "ColumnCache", "ColumnWeights", "ConfigError", "DECODE_LAYOUTS",
    "KNOWN_ARCHITECTURES", "KVCache", "Params", "Qwen2Config", "apply_chat_template", "column_copy_bytes",
    "column_weights", "decode_step", "decode_step_columns", "decode_windows", "default_positions", "forward",
    "from_column_cache", "grow_column_cache", "head_weight", "hidden_states", "init_cache", "init_params",
    "load_architecture", "load_hf", "load_tokenizer", "param_layout", "prefill", "project_to_vocab",
    "resolve_decode_layout", "save_hf", "to_column_cache",
]
