"""Rollouts: a jitted KV-cache sampler over the policy's own params.

Public API:
  generate_tokens(config, params, prompts, *, max_new_tokens, temperature=1.0, top_p=1.0, top_k=0,
                  eos_token_id=None, seed=0) -> list[list[int]]
"""

from prorl_jax.rollout.sampler import (ChunkPrograms, DecodeState, RolloutBatch, Sampler, decode_loop,
                                       default_memory_budget, generate_tokens, kv_bytes_per_row,
                                       prefill_and_first_token, rows_per_chunk)
from prorl_jax.rollout.sampling import SamplingParams, filtered_logits, select_tokens

__all__ = [
    "ChunkPrograms", "DecodeState", "RolloutBatch", "Sampler", "SamplingParams", "decode_loop",
    "default_memory_budget", "filtered_logits",
    "generate_tokens", "kv_bytes_per_row", "prefill_and_first_token", "rows_per_chunk", "select_tokens",
]
