"""Batched autoregressive sampling with a KV cache: prompts are prefilled once, their rows decoded in a fixed set of
slots (device programs: `prorl_jax.rollout.slots`; host loop: `prorl_jax.rollout.host_loop`) by a decoder chosen
once for the layout and platform (`prorl_jax.rollout.decoders`).

One call generates `num_samples` responses for each of a list of prompts of different lengths. Each row stops at any
EOS id or at `max_new_tokens`. With `batching="continuous"` (the default) a row that finishes frees its slot and
waiting rows are prefilled (each prompt once, its cache repeated for its samples) and inserted, so the device decodes
a full batch until the queue drains: a long-tailed length distribution costs its useful tokens, not its longest row
per chunk. `batching="static"` decodes fixed chunks until their longest row ends. Row r draws its t-th token from
`fold_in(fold_in(key(seed), row_ids[r]), t)`, its own token index, so a row's response does not depend on the
batching, its slot, what else is in the batch or how many slots there are (bitwise where the step's arithmetic is
itself batch invariant: README, "Rollouts").

With a device mesh (`Sampler(config, mesh=...)`) params are laid out by `prorl_jax.parallel`'s sampling rules
(tensor parallel, replicated over the batch axes), slots and their KV cache are split over the mesh's batch axes
("data", "fsdp"), and the Pallas decode kernel runs per shard under `shard_map`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh

from prorl_jax import models
from prorl_jax.parallel import mesh as mesh_lib
from prorl_jax.parallel import rules
from prorl_jax.rollout import slots as slots_lib
from prorl_jax.rollout.decoders import choose_decoder
from prorl_jax.rollout.host_loop import HostLoop
from prorl_jax.rollout.sampling import SamplingParams

BATCHING = ("continuous", "static")
# Continuous batching inserts rows into this share of the slots at a time (rounded to whole row shards): small
# enough that slots do not sit empty waiting for an insert, large enough that inserts stay few (README, "Rollouts").
REFILL_FRACTION = 0.125
# Once no row waits, the slots halve down to 1/DRAIN_SHRINK of them: each size is one more compiled program per cache
# window, and past a quarter the smaller batches no longer pay for their compilation on short responses.
DRAIN_SHRINK = 4
DRAIN_MIN_TOKENS = 128  # shorter responses drain in too few steps to repay the smaller batches' compilation


@dataclasses.dataclass
class RolloutBatch:
  """Host-side result for B = len(prompts) × num_samples rows, samples of a prompt adjacent."""

  prompt_index: np.ndarray  # int32 [B]: which prompt each row answers.
  tokens: np.ndarray  # int32 [B, N]: response tokens, `pad_id` after each row's length.
  logprobs: np.ndarray  # float32 [B, N]: sampling log-probs, 0 after each row's length.
  lengths: np.ndarray  # int32 [B]: response length, the EOS token included.
  finished_by_eos: np.ndarray  # bool [B]: False means truncated at max_new_tokens.
  stats: dict[str, float] = dataclasses.field(default_factory=dict)

  @property
  def response_mask(self) -> np.ndarray:
    """bool [B, N]: True on real response tokens."""
    return np.arange(self.tokens.shape[1])[None, :] < self.lengths[:, None]

  def response(self, row: int) -> list[int]:
    return self.tokens[row, :self.lengths[row]].tolist()


def kv_bytes_per_row(config: models.Qwen2Config, cache_len: int) -> int:
  """KV-cache bytes of one row: 2 (k, v) × layers × cache_len × kv_heads × head_dim × itemsize."""
  return (2 * config.num_hidden_layers * cache_len * config.num_key_value_heads * config.dims_per_head
          * config.compute_dtype.itemsize)


def rows_per_chunk(config: models.Qwen2Config, *, prompt_len: int, max_new_tokens: int, num_samples: int,
                   memory_budget_bytes: int) -> int:
  """How many rows (a multiple of `num_samples`) fit a memory budget for cache, logits and prefill activations."""
  cache_len = prompt_len + max_new_tokens
  per_row = kv_bytes_per_row(config, cache_len) + 4 * config.vocab_size * 4 + 4 * max_new_tokens * 2
  # Prefill of one prompt: fp32 attention scores of one layer at a time, plus the MLP activations.
  per_prompt = (4 * config.num_attention_heads * prompt_len * prompt_len
                + 4 * prompt_len * (3 * config.intermediate_size + 4 * config.hidden_size))
  prompts = max(1, memory_budget_bytes // (num_samples * per_row + per_prompt))
  return int(prompts * num_samples)


DEFAULT_BUDGET_FRACTION = 0.4  # of a device's memory, for rollout chunks when no budget is given


def default_memory_budget(bytes_limit: int | None) -> int:
  """The rollout memory budget per device: `DEFAULT_BUDGET_FRACTION` of the device memory JAX may use
  (`bytes_limit`), or 4 GiB where the device does not report it (CPUs)."""
  return int(DEFAULT_BUDGET_FRACTION * bytes_limit) if bytes_limit else 4 * 1024**3


def _local_bytes_limit() -> int | None:
  device = jax.local_devices()[0]  # jax.devices()[0] belongs to process 0 in a multi-process run
  stats = device.memory_stats() if hasattr(device, "memory_stats") else None
  return int(stats["bytes_limit"]) if stats and "bytes_limit" in stats else None


class Sampler:
  """Generates responses for lists of token-id prompts with a fixed model config.

  Args:
    config: the model config (its `attention_impl` chooses the decode-attention backend).
    pad_id: token written after each response's end.
    memory_budget_bytes: the slots (rows decoded at once) fill this budget per device (default: 40% of the device
      memory where JAX reports it, else 4 GiB).
    max_rows_per_chunk: an explicit cap on the slots (rounded down to whole prompts).
    prompt_bucket: prompt lengths are padded up to a multiple of this, to limit recompilation.
    mesh: optional device mesh (e.g. `prorl_jax.parallel.make_mesh(config.mesh)`, or any mesh with some of the axes
      "data", "fsdp", "tensor"): slots are split over its batch axes, params and KV heads over "tensor". The memory
      budget is then per device, so the slots are budget rows times the number of row shards. A mesh of just the
      default device splits nothing and samples as without a mesh (so the one-CPU column layout stays available).
    decode_layout: "rows" decodes with `models.decode_step`, "columns" with
      `models.decode_columns.decode_step_columns` (CPU, one device), "auto" picks columns on a single CPU device
      with the reference attention, rows elsewhere (`rollout.decoders`).
    batching: "continuous" refills slots as rows finish; "static" decodes fixed chunks to their longest row.
    refill_fraction: continuous batching's refill group, as a share of the slots (default `REFILL_FRACTION`).
  """

  def __init__(self, config: models.Qwen2Config, *, pad_id: int = 0, memory_budget_bytes: int | None = None,
               max_rows_per_chunk: int | None = None, prompt_bucket: int = 32, mesh: Mesh | None = None,
               decode_layout: str = "auto", batching: str = "continuous", refill_fraction: float | None = None):
    models.resolve_decode_layout(config, decode_layout, 1, "cpu")  # checks the name
    if decode_layout == "columns" and mesh is not None and mesh.size > 1:
      raise ValueError("decode_layout='columns' runs on one device; with a multi-device mesh use 'rows' or 'auto'")
    if batching not in BATCHING:
      raise ValueError(f"batching must be one of {BATCHING}, got {batching!r}")
    self.refill_fraction = REFILL_FRACTION if refill_fraction is None else float(refill_fraction)
    if not 0 < self.refill_fraction <= 1:
      raise ValueError(f"refill_fraction must be in (0, 1], got {refill_fraction}")
    self.decode_layout, self.batching = decode_layout, batching
    self.config = config
    self.pad_id = int(pad_id)
    self.memory_budget_bytes = memory_budget_bytes or default_memory_budget(_local_bytes_limit())
    self.max_rows_per_chunk = max_rows_per_chunk
    self.prompt_bucket = prompt_bucket
    if mesh is not None and any(t != AxisType.Auto for t in mesh.axis_types):
      # Explicit axes (jax.make_mesh's default) would make every op sharding-typed; the sampler relies on GSPMD.
      mesh = Mesh(mesh.devices, mesh.axis_names, axis_types=(AxisType.Auto,) * len(mesh.axis_names))
    # The platform the programs are compiled for: the mesh's devices (compile-only ones included), else the default.
    self.platform = mesh.devices.flat[0].platform if mesh is not None else jax.default_backend()
    if mesh is not None and mesh.size == 1 and mesh.devices.flat[0] == jax.devices()[0]:
      mesh = None
    self.mesh = mesh
    self.decoder = choose_decoder(config, decode_layout, 1 if mesh is None else mesh.size, self.platform)
    self._programs: dict[Any, slots_lib.SlotPrograms] = {}
    self._param_sharding_cache: dict[Any, Any] = {}

  @property
  def resolved_decode_layout(self) -> str:
    """"rows" or "columns": the decoder this sampler runs."""
    return self.decoder.name

  def plan(self, longest_prompt: int, num_prompts: int, max_new_tokens: int, num_samples: int) -> slots_lib.SlotPlan:
    """The slots and prefill groups for `num_prompts` prompts of up to `longest_prompt` tokens.

    Prompts are padded to a multiple of `prompt_bucket`. Slots: as many rows as the memory budget (per device, times
    the row shards) and `max_rows_per_chunk` allow, no more than there are rows, whole prompts only, padded so every
    row shard holds the same number of rows. Continuous batching inserts `refill_fraction` of them at a time (whole
    row shards) and, for responses of `DRAIN_MIN_TOKENS` or more, drains on down to 1/`DRAIN_SHRINK` of the slots.
    """
    prompt_len = int(math.ceil(longest_prompt / self.prompt_bucket) * self.prompt_bucket)
    shards = self._row_shards()
    rows = shards * rows_per_chunk(self.config, prompt_len=prompt_len, max_new_tokens=max_new_tokens,
                                   num_samples=num_samples, memory_budget_bytes=self.memory_budget_bytes)
    if self.max_rows_per_chunk:
      rows = min(rows, max(num_samples, self.max_rows_per_chunk // num_samples * num_samples))
    # Every row shard gets the same number of whole rows: groups are multiples of this many prompts.
    multiple = shards // math.gcd(shards, num_samples)
    round_up = lambda p: -(-p // multiple) * multiple
    fill = round_up(max(1, min(rows // num_samples, num_prompts)))
    slots = fill * num_samples
    windows = self.decoder.windows(prompt_len, prompt_len + max_new_tokens)
    if self.batching == "static":
      return slots_lib.SlotPlan(slots=slots, fill_prompts=fill, refill_prompts=fill, refill_rows=slots,
                                prompt_len=prompt_len, windows=windows, continuous=False, min_slots=slots)
    # Inserts of whole row shards; prefill groups of whole prompts, enough for one insert.
    refill_rows = min(slots, -(-max(1, round(slots * self.refill_fraction)) // shards) * shards)
    refill_prompts = min(fill, round_up(-(-refill_rows // num_samples)))
    return slots_lib.SlotPlan(slots=slots, fill_prompts=fill, refill_prompts=refill_prompts, refill_rows=refill_rows,
                              prompt_len=prompt_len, windows=windows, continuous=True,
                              min_slots=max(shards, slots // DRAIN_SHRINK) if max_new_tokens >= DRAIN_MIN_TOKENS
                              else slots)

  def programs(self, params, sampling: SamplingParams, eos_ids: tuple[int, ...], max_new_tokens: int,
               num_samples: int, plan: slots_lib.SlotPlan) -> slots_lib.SlotPrograms:
    """The jitted programs of one plan (cached); `params` may be abstract (shapes only), e.g. for planning."""
    key = (sampling, eos_ids, max_new_tokens, num_samples, plan, jax.tree.structure(params))
    if key not in self._programs:
      shardings = self._param_shardings(params) if self.mesh is not None else None
      self._programs[key] = slots_lib.SlotPrograms(
          self.config, self.decoder, sampling, eos_ids=eos_ids, pad_id=self.pad_id, max_new_tokens=max_new_tokens,
          num_samples=num_samples, plan=plan, mesh=self.mesh, param_shardings=shardings)
    return self._programs[key]

  def generate(self, params: models.Params, prompts: Sequence[Sequence[int]], *, max_new_tokens: int,
               sampling: SamplingParams = SamplingParams(), num_samples: int = 1,
               eos_token_ids: int | Sequence[int] | None = None, seed: int | jax.Array = 0,
               row_ids: Sequence[int] | np.ndarray | None = None) -> RolloutBatch:
    """Samples `num_samples` responses of up to `max_new_tokens` tokens for every prompt.

    Row r (prompt r // num_samples) draws from PRNG key `fold_in(key(seed), row_ids[r])`; by default
    `row_ids = arange(len(prompts) * num_samples)`. Passing ids fixed per problem keeps its samples identical
    however the problems are batched. `stats` reports the batching, decode steps and slot occupancy (the mean share
    of slots holding a live row per decode step), prefill and decode seconds and tokens/s.
    """
    if not prompts:
      raise ValueError("prompts is empty")
    if max_new_tokens < 1:
      raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    for i, p in enumerate(prompts):
      if len(p) == 0:
        raise ValueError(f"prompt {i} is empty; every prompt needs at least one token")
    eos_ids = self._eos_tuple(eos_token_ids)
    total = len(prompts) * num_samples
    row_ids = np.arange(total) if row_ids is None else np.asarray(row_ids, np.int64)
    if row_ids.shape != (total,):
      raise ValueError(f"row_ids must have len(prompts) * num_samples = {total} entries, got {row_ids.shape}")
    longest = max(len(p) for p in prompts)
    plan = self.plan(longest, len(prompts), max_new_tokens, num_samples)
    if plan.prompt_len + max_new_tokens > self.config.max_position_embeddings:
      raise ValueError(f"prompt ({longest}) + max_new_tokens ({max_new_tokens}) exceeds the model's "
                       f"max_position_embeddings ({self.config.max_position_embeddings})")
    if self.mesh is not None:
      params = jax.device_put(params, self._param_shardings(params))
    # A key from host data: a committed (e.g. replicated) key would pin the per-row keys' layout.
    base_key = (jax.random.wrap_key_data(np.asarray(jax.random.key_data(seed))) if isinstance(seed, jax.Array)
                else jax.random.key(int(seed)))
    run = HostLoop(self.programs(params, sampling, eos_ids, max_new_tokens, num_samples, plan), params, prompts,
                   row_ids, base_key, self.pad_id)
    start = time.perf_counter()
    # The context mesh is what lets the model run the Pallas decode kernel per shard (models/layers.py).
    with jax.set_mesh(self.mesh) if self.mesh is not None else contextlib.nullcontext():
      results = run.execute()
    elapsed = time.perf_counter() - start
    generated = int(results.lengths.sum())
    stats = {"batching": self.batching, "slots": plan.slots, "rows_per_chunk": plan.slots,
             "refill_rows": plan.refill_rows, "chunks": run.prefills, "prefills": run.prefills,
             "inserts": run.inserts, "shrinks": run.shrinks, "decode_steps": run.steps,
             "slot_occupancy": run.live_slot_steps / max(run.slot_steps, 1),
             "generated_tokens": generated, "seconds": elapsed, "prefill_seconds": run.prefill_seconds,
             "decode_seconds": run.decode_seconds, "decode_layout": self.decoder.name,
             "tokens_per_second": float(generated / max(elapsed, 1e-9))}
    return RolloutBatch(prompt_index=np.repeat(np.arange(len(prompts), dtype=np.int32), num_samples),
                        tokens=results.tokens, logprobs=results.logprobs, lengths=results.lengths,
                        finished_by_eos=results.eos_hit, stats=stats)

  def _eos_tuple(self, eos_token_ids) -> tuple[int, ...]:
    if eos_token_ids is None:
      return tuple(self.config.eos_token_ids)
    if isinstance(eos_token_ids, (int, np.integer)):
      return (int(eos_token_ids),)
    return tuple(int(e) for e in eos_token_ids)

  def _row_shards(self) -> int:
    if self.mesh is None:
      return 1
    return mesh_lib.axis_size(self.mesh, mesh_lib.batch_axes(self.mesh))

  def _param_shardings(self, params: models.Params) -> Any:
    key = (jax.tree.structure(params), tuple(x.shape for x in jax.tree.leaves(params)))
    if key not in self._param_sharding_cache:
      self._param_sharding_cache[key] = rules.param_shardings(self.config, params, self.mesh, mode="sample")
    return self._param_sharding_cache[key]


def generate_tokens(config: models.Qwen2Config, params: models.Params, prompts: Sequence[Sequence[int]], *,
                    max_new_tokens: int, temperature: float = 1.0, top_p: float = 1.0, top_k: int = 0,
                    eos_token_id: int | Sequence[int] | None = None, seed: int = 0) -> list[list[int]]:
  """New tokens for each prompt (token-id lists of any lengths), ending after the first EOS (inclusive) or at
  `max_new_tokens`. `temperature=0` is greedy. `eos_token_id` may be one id or several; None uses the config's."""
  sampler = Sampler(config, pad_id=config.pad_token_id or 0)
  batch = sampler.generate(params, prompts, max_new_tokens=max_new_tokens,
                           sampling=SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p),
                           eos_token_ids=eos_token_id, seed=seed)
  return [batch.response(i) for i in range(len(prompts))]
