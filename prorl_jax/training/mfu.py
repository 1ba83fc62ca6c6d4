"""Model FLOPs utilisation of the update phase, for the trainer's logs and the benchmarks.

FLOPs are counted as in PaLM (Chowdhery et al. 2022, appendix B): 2 FLOPs per multiply-add of every weight matrix
(the embedding lookup is not a matmul), plus attention's QK^T and PV products over the full context, 2·2·T·Hq·D per
token and layer. A training forward+backward costs 3 forwards. The ProRLv2 update phase is three passes over each
sequence of a mini-batch: the old policy's and the reference's log-prob forwards (2·P_eff per token each) and the
policy's forward+backward (6·P_eff), so 10·P_eff per token plus attention (5 x a forward's). The LM head only
runs on the response positions (log-probs of the prompt are never needed).

Peak FLOP/s: the chip table's dense bf16 throughput for known accelerators (`prorl_jax.parallel.chips`), or a
measured jitted matmul for others (the CPU).
"""

from __future__ import annotations

import time
from typing import Any

import jax
import jax.numpy as jnp

from prorl_jax.models import Qwen2Config
from prorl_jax.parallel import chips

def forward_flops_per_sequence(config: Qwen2Config, prompt_len: int, response_len: int) -> float:
  """FLOPs of one log-prob forward over a `[prompt_len + response_len]` sequence: every layer's matmuls and
  attention on all positions, the LM head on the response positions."""
  t = prompt_len + response_len
  h, d = config.hidden_size, config.dims_per_head
  hq, hkv = config.num_attention_heads, config.num_key_value_heads
  layer_matmul = h * d * (2 * hq + 2 * hkv) + 3 * h * config.intermediate_size
  attention = 2 * 2 * t * hq * d  # per token: scores and weighted sum over the full context
  per_token = config.num_hidden_layers * (2 * layer_matmul + attention)
  return float(t * per_token + response_len * 2 * h * config.vocab_size)


def update_flops_per_sequence(config: Qwen2Config, prompt_len: int, response_len: int) -> float:
  """FLOPs the update phase spends on one sequence: old + reference log-prob forwards and the policy's
  forward+backward (= 3 forwards)."""
  return 5.0 * forward_flops_per_sequence(config, prompt_len, response_len)


def update_flops_per_token(config: Qwen2Config, prompt_len: int, response_len: int) -> float:
  """`update_flops_per_sequence` per sequence token (prompt and response)."""
  return update_flops_per_sequence(config, prompt_len, response_len) / (prompt_len + response_len)


def peak_flops_from_table(device: Any = None, dtype: Any = jnp.bfloat16) -> float | None:
  """Peak dense FLOP/s of `device` (default: the first device) for matmuls in `dtype` from the chip table
  (`prorl_jax.parallel.chips`), or None if unknown. float32 matmuls on NVIDIA run as TF32 at half the bf16 rate
  under JAX's default precision."""
  device = device or jax.devices()[0]
  chip = chips.chip_for_kind(getattr(device, "device_kind", ""))
  if chip is None:
    return None
  if jnp.dtype(dtype) == jnp.float32 and device.platform == "gpu":
    return chip.peak_bf16_flops / 2
  return chip.peak_bf16_flops


def measure_matmul_flops(n: int = 1024, dtype: Any = jnp.float32, repeats: int = 10, device: Any = None) -> float:
  """Best-of-`repeats` FLOP/s of a jitted `[n, n] @ [n, n]` matmul on `device` (all its cores)."""
  device = device or jax.devices()[0]
  a = jax.device_put(jnp.ones((n, n), dtype), device)
  f = jax.jit(lambda x, y: x @ y)
  f(a, a).block_until_ready()
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    f(a, a).block_until_ready()
    best = min(best, time.perf_counter() - start)
  return 2.0 * n**3 / best


def peak_flops(device: Any = None, dtype: Any = jnp.bfloat16) -> tuple[float, str]:
  """(peak FLOP/s, source): the data-sheet value for known accelerators, else a measured matmul."""
  table = peak_flops_from_table(device, dtype)
  if table is not None:
    return table, "table"
  return measure_matmul_flops(dtype=jnp.float32 if jnp.dtype(dtype) == jnp.float32 else dtype,
                              device=device), "measured_matmul"


def mfu(sequences_per_second: float, config: Qwen2Config, prompt_len: int, response_len: int,
        peak_flops_per_second: float, num_devices: int = 1) -> float:
  """Model FLOPs utilisation of the update phase: achieved update FLOP/s over the devices' peak."""
  achieved = sequences_per_second * update_flops_per_sequence(config, prompt_len, response_len)
  return achieved / (peak_flops_per_second * num_devices)
