"""Device-memory estimate of a run, per device under a mesh: what must fit before anything is compiled.

Resident state (exact, from the sharding rules): params, the reference policy, AdamW's two moments. On top of it,
one of three phases is live at a time:

* update (`estimate_train`): gradients and the optimizer's update tree (2 x params), the mini-batch, the
  activations autodiff saves for the backward pass of one micro-batch, and the LM-head chunk work;
* log-prob forward of the old / reference policy: one layer's forward temporaries plus an LM-head chunk;
* rollout (`estimate_rollout`): the KV cache of the sampler's slots, decode buffers, the prefill forward, and the
  rollout copy of the params when its layout (no fsdp) or dtype differs from the training params; on one CPU device
  the column decode layout (`models.decode_columns`) adds a transposed copy of the weights.

Activations follow what `jax.ad_checkpoint` reports as saved residuals for `prorl_jax.models` (per decoder layer,
N = rows x seq_len tokens on the device, A = rows x heads x seq_len² attention scores, c = compute itemsize):

  attention  A (2·4 + c + 1)          fp32 scores and their exp, probabilities in c, the broadcast bool mask
  MLP        6 N I c                  gate, up, sigmoid/silu pieces and their product
  hidden     N H (5c + 2·4)           residual-stream inputs, norms (RMSNorm upcasts to fp32)
  q/k/v      N D (Hq + 2 Hkv + 4) c   rotated q, k, v and the per-layer casts of the rotary tables
  weights    the layer's matrices in c, only when params are stored in another dtype (saved casts)

With remat (`Qwen2Config.remat`) a layer keeps only its input, N H c, plus one layer's full set while its
backward runs. The backward pass frees a layer's residuals as it makes that layer's gradients, so the update's
temporaries peak either at its start (all residuals + LM-head work) or at its end (gradients + the update tree).

Checked by tests/test_training_memory.py against `saved_residuals` (backend-independent) and against XLA's compiled
`memory_analysis()` of the real update, log-prob and decode steps on CPU. Two CPU-only effects are out of scope:
XLA:CPU drops rematerialisation barriers (it CSEs the recomputation away, so remat saves nothing there), and it
upcasts bfloat16 matmul operands to float32 (an fp32 copy of the weights during bf16 decoding). Per-device numbers
assume activations split over the batch axes as FSDP intends, which needs the model's activation hints
(`models.constrain_activations` with `parallel.TRAIN_LAYOUT`; without them GSPMD splits hidden dims over fsdp
instead, and activations take ~2x more per device).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from prorl_jax.models import Qwen2Config, column_copy_bytes, init_params, resolve_decode_layout
from prorl_jax import parallel
from prorl_jax.parallel import batch_axes, rules

GiB = 1024**3


def _split(n: int, parts: int) -> int:
  """Elements per device of a dim of n split over `parts` devices (the rules replicate uneven dims)."""
  return n // parts if parts > 1 and n % parts == 0 else n


def _platform(mesh: Mesh) -> str:
  """The platform of the mesh's devices (compile-only devices of a topology included)."""
  return mesh.devices.flat[0].platform


def _sizes(mesh: Mesh) -> tuple[int, int]:
  """(row shards, tensor size) of a mesh."""
  shards = math.prod(int(mesh.shape[a]) for a in batch_axes(mesh))
  return shards, int(mesh.shape.get("tensor", 1))


def param_bytes(config: Qwen2Config, *, mesh: Mesh | None = None, dtype: Any = jnp.float32,
                mode: str = "train") -> int:
  """Bytes of one copy of the params on one device, laid out by the sharding rules (`mode` "train" or "sample")."""
  mesh = parallel.mesh_or_one_device(mesh)
  shapes = jax.eval_shape(lambda: init_params(config, jax.random.key(0), dtype=dtype))
  shardings = rules.param_shardings(config, shapes, mesh, mode=mode)
  sizes = jax.tree.map(lambda x, s: rules.shard_bytes(x.shape, x.dtype.itemsize, s.spec, mesh), shapes, shardings)
  return sum(jax.tree.leaves(sizes))


def _layer_matrix_elements(config: Qwen2Config) -> int:
  h, d = config.hidden_size, config.dims_per_head
  return (h * d * (2 * config.num_attention_heads + 2 * config.num_key_value_heads)
          + 3 * h * config.intermediate_size)


def layer_residual_bytes(config: Qwen2Config, rows: int, seq_len: int, *, tensor: int = 1,
                         param_dtype: Any = jnp.float32) -> int:
  """Bytes one decoder layer saves for its backward pass (no remat), for `rows` sequences of `seq_len` on one
  device with heads and the MLP width split over `tensor` (see the module docstring for the terms)."""
  c = config.compute_dtype.itemsize
  h, d = config.hidden_size, config.dims_per_head
  hq, hkv = _split(config.num_attention_heads, tensor), _split(config.num_key_value_heads, tensor)
  inter = _split(config.intermediate_size, tensor)
  n, a = rows * seq_len, rows * hq * seq_len * seq_len
  total = (a * (2 * 4 + c + 1) + 6 * n * inter * c + n * h * (5 * c + 2 * 4) + n * d * (hq + 2 * hkv + 4) * c
           + 2 * rows * hq * seq_len * 4 + 4 * n * 4)
  if jnp.dtype(param_dtype) != config.compute_dtype:
    total += _layer_matrix_elements(config) // tensor * c
  return total


def activation_bytes(config: Qwen2Config, rows: int, prompt_len: int, response_len: int, *, tensor: int = 1,
                     param_dtype: Any = jnp.float32, include_recompute: bool = True) -> int:
  """Residuals of the whole model for one micro-batch of `rows` sequences on one device (remat per config); with
  remat and `include_recompute`, plus the one layer whose residuals are rebuilt while its backward runs."""
  c = config.compute_dtype.itemsize
  t = prompt_len + response_len
  n, h, d = rows * t, config.hidden_size, config.dims_per_head
  layer = layer_residual_bytes(config, rows, t, tensor=tensor, param_dtype=param_dtype)
  layers = config.num_hidden_layers
  body = (layers * n * h * c + (layer if include_recompute else 0)) if config.remat else layers * layer
  # Shared by all layers: the [B, T, T] mask, fp32 rotary tables, the final norm, the response hidden slice and
  # (stored in another dtype) the LM head's cast.
  shared = rows * t * t + 2 * n * d * 4 + n * h * (c + 4) + rows * response_len * h * c
  if jnp.dtype(param_dtype) != config.compute_dtype:
    shared += h * _split(config.vocab_size, tensor) * c
  return body + shared


def logits_bytes(config: Qwen2Config, tokens: int, chunk_size: int, *, tensor: int = 1, backward: bool = True) -> int:
  """LM-head work per device. Forward: one fp32 `[chunk, V]` block. Backward: three (logits, probabilities, their
  gradient) plus the fp32 `[H, V]` gradient accumulator of the chunk loop."""
  v = _split(config.vocab_size, tensor)
  chunk = min(chunk_size, max(tokens, 1))
  if not backward:
    return chunk * v * 4
  return 3 * chunk * v * 4 + config.hidden_size * v * 4


def forward_peak_bytes(config: Qwen2Config, rows: int, seq_len: int, *, tensor: int = 1,
                       platform: str = "cpu") -> int:
  """Temporaries of a forward pass without autodiff (buffers are reused layer after layer): one layer's fp32
  scores and their exp, one `[N, I]` MLP block, two hidden states, and fp32 norm upcasts when computing in 16 bits.
  XLA for TPUs (and GPUs) fuses the softmax into the scores: one fp32 block instead of two."""
  c = config.compute_dtype.itemsize
  hq, inter = _split(config.num_attention_heads, tensor), _split(config.intermediate_size, tensor)
  n, h = rows * seq_len, config.hidden_size
  upcast = 2 * n * h * 4 if c < 4 else 0
  blocks = 2 if platform == "cpu" else 1
  return rows * hq * seq_len * seq_len * blocks * 4 + n * (inter + 2 * h) * c + upcast


def logprob_forward_bytes(config: Qwen2Config, rows: int, prompt_len: int, response_len: int, chunk_size: int, *,
                          tensor: int = 1, platform: str = "cpu") -> int:
  """Temporaries of a log-prob pass (no autodiff) on `rows` sequences per device. On CPU the layer stack's and the
  LM-head loop's buffers add up (as XLA:CPU's buffer assignment keeps them); accelerator compilers free the layer
  buffers before the LM head runs, whose peak is the gathered head `[H, V]` in the compute dtype and one fp32 chunk
  of logits (checked against the TPU compiler: README, "Planning a run")."""
  layers = forward_peak_bytes(config, rows, prompt_len + response_len, tensor=tensor, platform=platform)
  head = logits_bytes(config, rows * response_len, chunk_size, tensor=tensor, backward=False)
  if platform == "cpu":
    return layers + head
  gathered = config.hidden_size * _split(config.vocab_size, tensor) * config.compute_dtype.itemsize
  return max(layers, head + gathered)


@dataclasses.dataclass(frozen=True)
class TrainMemory:
  """Bytes per device of the update phase (and the log-prob forward that precedes it)."""

  params: int
  reference: int
  optimizer: int
  gradients: int  # gradient tree + the optimizer's update tree
  batch: int
  activations: int
  logits: int
  logprob_forward: int  # temporaries of the old / reference log-prob pass

  @property
  def resident(self) -> int:
    return self.params + self.reference + self.optimizer

  @property
  def update_temp(self) -> int:
    """Temporaries of the update step (compare `memory_analysis().temp_size_in_bytes`). The backward pass frees a
    layer's residuals as it produces that layer's gradients, so the peak is at one end: all residuals plus the
    LM-head work at its start, or gradients plus the optimizer's update tree at its end."""
    return max(self.activations + self.logits, self.gradients)

  @property
  def total(self) -> int:
    return self.resident + self.batch + max(self.update_temp, self.logprob_forward)

  def as_dict(self) -> dict[str, float]:
    out = {f.name: getattr(self, f.name) / GiB for f in dataclasses.fields(self)}
    return dict(out, total=self.total / GiB)


@dataclasses.dataclass(frozen=True)
class RolloutMemory:
  """Bytes per device of the rollout phase (on top of the resident train state)."""

  rollout_params: int  # params in the sampling layout (tensor only) and dtype
  duplicate_params: bool  # rollout_params is a second copy (its layout or dtype differs from the train params)
  kv_cache: int
  decode_state: int  # token / log-prob buffers and per-row scalars of the while loop
  step_temp: int  # per decode step: next-token logits, one layer's cache update (rows layout)
  prefill: int  # temporaries of the prompt forward
  # The column decode layout (`models.resolve_decode_layout`): the transposed copy of the weights, prepared once per
  # generate call (its cache is the KV cache above, stored transposed).
  column_copy: int = 0

  @property
  def total(self) -> int:
    extra = self.rollout_params if self.duplicate_params else 0
    return extra + self.kv_cache + self.decode_state + self.column_copy + max(self.step_temp, self.prefill)

  def as_dict(self) -> dict[str, float]:
    out = {f.name: getattr(self, f.name) / GiB for f in dataclasses.fields(self) if f.name != "duplicate_params"}
    return dict(out, duplicate_params=self.duplicate_params, total=self.total / GiB)


def estimate_train(config: Qwen2Config, *, rows: int, prompt_len: int, response_len: int, micro_rows: int = 0,
                   logprob_rows: int = 0, mesh: Mesh | None = None, param_dtype: Any = jnp.float32,
                   ref_dtype: Any = None, chunk_size: int = 1024) -> TrainMemory:
  """Update-phase memory per device for mini-batches of `rows` sequences of `prompt_len + response_len` tokens.

  Args:
    micro_rows: sequences per gradient micro-batch (0 = `rows`); logprob_rows: per log-prob pass (0 = micro_rows).
    param_dtype, ref_dtype: storage dtypes of the policy and the reference (default: the policy's).
    chunk_size: tokens per LM-head chunk (`config.algorithm.logprob_chunk_size`).
    mesh: the run's mesh (default: one device).
  """
  mesh = parallel.mesh_or_one_device(mesh)
  shards, tensor = _sizes(mesh)
  micro = micro_rows or rows
  per_dev = lambda r: -(-r // shards)
  p = param_bytes(config, mesh=mesh, dtype=param_dtype)
  ref = param_bytes(config, mesh=mesh, dtype=ref_dtype or param_dtype)
  t = prompt_len + response_len
  batch = per_dev(rows) * (t * (4 + 1) + response_len * 4 * 4)
  act = activation_bytes(config, per_dev(micro), prompt_len, response_len, tensor=tensor, param_dtype=param_dtype)
  lp_rows = per_dev(logprob_rows or micro)
  return TrainMemory(
      params=p, reference=ref, optimizer=2 * p, gradients=2 * p, batch=batch, activations=act,
      logits=logits_bytes(config, per_dev(micro) * response_len, chunk_size, tensor=tensor),
      logprob_forward=logprob_forward_bytes(config, lp_rows, prompt_len, response_len, chunk_size, tensor=tensor,
                                            platform=_platform(mesh)))


def estimate_rollout(config: Qwen2Config, *, rows: int, prompt_len: int, max_new_tokens: int, num_prompts: int = 0,
                     mesh: Mesh | None = None, param_dtype: Any = jnp.float32,
                     rollout_dtype: Any = None, decode_layout: str = "auto") -> RolloutMemory:
  """Rollout memory per device for a chunk of `rows` rows (prompts x samples) with a KV cache of
  `prompt_len + max_new_tokens` positions; `num_prompts` distinct prompts are prefilled (default `rows`).
  `decode_layout` as the sampler's ("auto" resolves for the mesh's platform and device count; default mesh: one
  device)."""
  mesh = parallel.mesh_or_one_device(mesh)
  shards, tensor = _sizes(mesh)
  rows_dev = -(-rows // shards)
  c = config.compute_dtype.itemsize
  kv, d = _split(config.num_key_value_heads, tensor), config.dims_per_head
  cache_len = prompt_len + max_new_tokens
  layer_cache = rows_dev * cache_len * kv * d * c  # keys or values of one layer
  # int32 tokens + fp32 log-probs per step; positions, counts (int32), done, eos (bool), threefry key (2 x uint32).
  state = rows_dev * (max_new_tokens * 8 + 4 + 4 + 1 + 1 + 8)
  v = _split(config.vocab_size, tensor)
  rollout_dtype = rollout_dtype or param_dtype
  fsdp = int(mesh.shape.get("fsdp", 1))
  prompts_dev = -(-(num_prompts or rows) // shards)
  columns = resolve_decode_layout(config, decode_layout, mesh.size, _platform(mesh)) == "columns"
  kv_cache = 2 * config.num_hidden_layers * layer_cache
  return RolloutMemory(
      rollout_params=param_bytes(config, mesh=mesh, dtype=rollout_dtype, mode="sample"),
      duplicate_params=fsdp > 1 or jnp.dtype(rollout_dtype) != jnp.dtype(param_dtype),
      kv_cache=kv_cache, decode_state=state,
      step_temp=(0 if columns else 2 * layer_cache) + 2 * rows_dev * v * 4,  # the column step updates in place
      prefill=forward_peak_bytes(config, prompts_dev, prompt_len, tensor=tensor) + 2 * prompts_dev * v * 4,
      column_copy=column_copy_bytes(config, rollout_dtype) if columns else 0)


def estimate_run(run_config: Any, model_config: Qwen2Config, mesh: Mesh | None = None, *,
                 rollout_rows: int = 0) -> dict[str, Any]:
  """Both phases for a trainer config (`prorl_jax.training.config`): the mini-batch is
  `batch.mini_batch_prompts x rollout.n` sequences of `data.max_prompt_length + rollout.max_new_tokens`, the rollout
  chunk `rollout_rows` rows (default the whole generation batch). Returns {"train", "rollout", "peak_gib"}."""
  c = run_config
  rows = c.batch.mini_batch_prompts * c.rollout.n
  train = estimate_train(model_config, rows=rows, prompt_len=c.data.max_prompt_length,
                         response_len=c.rollout.max_new_tokens, micro_rows=c.batch.micro_batch_size,
                         logprob_rows=c.batch.logprob_micro_batch_size or c.batch.micro_batch_size, mesh=mesh,
                         param_dtype=c.model.param_dtype, ref_dtype=c.model.ref_param_dtype,
                         chunk_size=c.algorithm.logprob_chunk_size)
  rollout = estimate_rollout(model_config, rows=rollout_rows or c.batch.gen_prompts * c.rollout.n,
                             prompt_len=c.data.max_prompt_length, max_new_tokens=c.rollout.max_new_tokens,
                             num_prompts=(rollout_rows // c.rollout.n) if rollout_rows else c.batch.gen_prompts,
                             mesh=mesh, param_dtype=c.model.param_dtype,
                             rollout_dtype=c.model.rollout_param_dtype or None)
  peak = max(train.total, train.resident + rollout.total)
  return {"train": train.as_dict(), "rollout": rollout.as_dict(), "peak_gib": peak / GiB}
