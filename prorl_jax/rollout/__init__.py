"""Rollouts: a jitted KV-cache sampler over the policy's own params.

Public API:
  generate_tokens(config, params, prompts, *, max_new_tokens, temperature=1.0, top_p=1.0, top_k=0,
                  eos_token_id=None, seed=0) -> list[list[int]]
"""

from prorl_jax.rollout.decoders import ColumnsDecoder, RowsDecoder, choose_decoder
from prorl_jax.rollout.sampler import (BATCHING, RolloutBatch, Sampler, default_memory_budget, generate_tokens,
                                       kv_bytes_per_row, rows_per_chunk)
from prorl_jax.rollout.slots import SlotPlan, SlotPrograms
from prorl_jax.rollout.sampling import SamplingParams, filtered_logits, select_tokens

__all__ = [
    "BATCHING", "ColumnsDecoder", "RolloutBatch", "RowsDecoder", "Sampler", "SamplingParams", "SlotPlan",
    "SlotPrograms", "choose_decoder", "default_memory_budget", "filtered_logits",
    "generate_tokens", "kv_bytes_per_row", "rows_per_chunk", "select_tokens",
]
