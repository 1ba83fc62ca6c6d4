"""Data for ProRL training and evaluation: schema, loaders, chat formatting, the Grain prompt pipeline and an
embedded multi-domain dataset that needs no download.

Typical use:
  examples = load_examples("train.parquet")            # or embedded_dataset(2000, seed=0)
  pipeline = PromptPipeline(examples, tokenizer, PipelineConfig(batch_size=256, max_prompt_length=1024))
  batch = next(pipeline)                                # PromptBatch: examples + prompt token ids
  state = pipeline.get_state()                          # JSON-serialisable; store with the checkpoint
"""

from prorl_jax.data.embedded import DEFAULT_DOMAINS, DEFAULT_LOGIC_TASKS, embedded_dataset
from prorl_jax.data.formatting import (CHATML_TEMPLATE, DEFAULT_INSTRUCTIONS, ChatTemplateError, apply_instruction,
                                       build_messages, encode_messages, encode_prompt)
from prorl_jax.data.loaders import COLUMN_MAPS, load_examples, register_column_map, save_examples
from prorl_jax.data.specs import load_spec, spec_label
from prorl_jax.data.pipeline import PipelineConfig, PromptBatch, PromptPipeline, pad_prompts
from prorl_jax.data.schema import DOMAIN_ALIASES, DOMAINS, DataError, Example
from prorl_jax.data.tiny_tokenizer import byte_chat_tokenizer

__all__ = [
    "CHATML_TEMPLATE", "COLUMN_MAPS", "DEFAULT_DOMAINS", "DEFAULT_INSTRUCTIONS", "DEFAULT_LOGIC_TASKS",
    "DOMAIN_ALIASES", "DOMAINS", "ChatTemplateError", "DataError", "Example", "PipelineConfig", "PromptBatch",
    "PromptPipeline", "apply_instruction", "build_messages", "byte_chat_tokenizer", "embedded_dataset",
    "encode_messages", "encode_prompt", "load_examples", "load_spec", "pad_prompts", "register_column_map",
    "save_examples", "spec_label",
]
