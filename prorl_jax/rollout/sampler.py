"""Batched autoregressive sampling with a KV cache: a jitted prefill, then a jitted `lax.while_loop` decode.

One call generates `num_samples` responses for each of a list of prompts of different lengths. Prompts are
prefilled once (right-padded into the ragged cache layout of `prorl_jax.models`) and their caches repeated for
the samples. Each row stops at any EOS id or at `max_new_tokens`; the loop exits as soon as every row is done, and
finished rows skip attention work. Rows draw from their own PRNG keys (`fold_in(seed, row)`, then the step), so
results do not depend on how the batch is split into chunks.

With a device mesh (`Sampler(config, mesh=...)`) params are laid out by `prorl_jax.parallel`'s sampling rules
(tensor parallel, replicated over the batch axes), rows and their KV cache are split over the mesh's batch axes
("data", "fsdp"), chunks are padded to a whole number of rows per shard, and the Pallas decode kernel runs per shard
under `shard_map`. Per-row PRNG keys keep the samples independent of the mesh.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from typing import Any, Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding

from kernels.decode_attention_select import target_platform
from prorl_jax import models
from prorl_jax.parallel import mesh as mesh_lib
from prorl_jax.parallel import rules
from prorl_jax.rollout.sampling import SamplingParams, select_tokens, select_tokens_vocab_major


@flax.struct.dataclass
class DecodeState:
  """The while-loop carry. B = rows (prompts × samples), N = max_new_tokens."""

  step: jax.Array  # int32 scalar: tokens generated so far in every live row.
  tokens: jax.Array  # int32 [B, N]: generated tokens, pad after each row's end.
  logprobs: jax.Array  # float32 [B, N]: log-prob of each generated token, 0 after the end.
  positions: jax.Array  # int32 [B]: position (= cache index) of each row's latest token.
  done: jax.Array  # bool [B]
  eos_hit: jax.Array  # bool [B]: finished by an EOS token (else by length, or still running).
  num_generated: jax.Array  # int32 [B]
  cache: models.KVCache
  keys: jax.Array  # [B] per-row PRNG keys.


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


def _is_eos(tokens: jax.Array, eos_ids: tuple[int, ...]) -> jax.Array:
  if not eos_ids:
    return jnp.zeros(tokens.shape, bool)
  return jnp.any(tokens[:, None] == jnp.asarray(eos_ids, tokens.dtype)[None, :], axis=-1)


def _step_keys(keys: jax.Array, step: jax.Array) -> jax.Array:
  return jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys, step)


def _constrain_cache(config: models.Qwen2Config, cache: models.KVCache, mesh: Mesh | None) -> models.KVCache:
  if mesh is None:
    return cache
  return jax.lax.with_sharding_constraint(cache, rules.kv_cache_shardings(config, cache.batch_size, cache.max_len,
                                                                          mesh))


def _prefill_and_first_token(config: models.Qwen2Config, sampling: SamplingParams, params: models.Params,
                             prompt_ids: jax.Array, prompt_lengths: jax.Array, live: jax.Array, keys: jax.Array, *,
                             eos_ids: tuple[int, ...], max_new_tokens: int, num_samples: int, cache_len: int,
                             pad_id: int, mesh: Mesh | None = None) -> DecodeState:
  """Prefills P right-padded prompts `[P, T]` and samples each row's first token (B = P × num_samples rows).

  `live` bool `[P]` marks real prompts (padding prompts of a fixed-shape chunk start done); `keys` `[B]`. With a
  `mesh`, the KV cache is created and repeated in its sharded layout instead of replicated then resharded.
  """
  cache = _constrain_cache(config, models.init_cache(config, prompt_ids.shape[0], cache_len), mesh)
  logits, cache = models.prefill(config, params, prompt_ids, prompt_lengths, cache)
  if num_samples > 1:
    repeat = lambda x: jnp.repeat(x, num_samples, axis=0)
    logits, prompt_lengths, live = repeat(logits), repeat(prompt_lengths), repeat(live)
    cache = _constrain_cache(config, jax.tree.map(repeat, cache), mesh)
  b = logits.shape[0]
  first, first_lp = select_tokens(logits, _step_keys(keys, jnp.int32(0)), sampling)
  eos = _is_eos(first, eos_ids) & live
  done = eos | ~live | (max_new_tokens <= 1)
  tokens = jnp.full((b, max_new_tokens), pad_id, jnp.int32).at[:, 0].set(jnp.where(live, first, pad_id))
  logprobs = jnp.zeros((b, max_new_tokens), jnp.float32).at[:, 0].set(jnp.where(live, first_lp, 0.0))
  return DecodeState(step=jnp.int32(1), tokens=tokens, logprobs=logprobs, positions=prompt_lengths.astype(jnp.int32),
                     done=done, eos_hit=eos, num_generated=live.astype(jnp.int32), cache=cache, keys=keys)


prefill_and_first_token = functools.partial(
    jax.jit, static_argnames=("config", "sampling", "eos_ids", "max_new_tokens", "num_samples", "cache_len",
                              "pad_id", "mesh"))(_prefill_and_first_token)


def _decode_head(config: models.Qwen2Config, params: models.Params) -> jax.Array:
  """The LM head `[hidden, vocab]` for the decode loop, laid out once before it.

  A tied head is the embedding's transpose. XLA folds that transpose into the per-step dot, and XLA:CPU's matmul
  runs about 30% slower on the transposed `[vocab, hidden]` operand at decode batch sizes, so on CPU the loop gets a
  materialised copy (the barrier stops the fold). Accelerator matmuls take either layout at full speed, so there
  the copy (vocab × hidden more memory) is skipped. The platform is the one compiled for (`target_platform`).
  """
  head = models.head_weight(config, params)
  if config.tie_word_embeddings and target_platform() == "cpu":
    head = jax.lax.optimization_barrier(head.copy())
  return head


def _decodes_in_columns(config: models.Qwen2Config, decode_layout: str) -> bool:
  mesh = jax.sharding.get_abstract_mesh()  # the sharded sampler traces under its mesh
  return models.resolve_decode_layout(config, decode_layout, 1 if mesh.empty else mesh.size) == "columns"


def _decode_loop(config: models.Qwen2Config, sampling: SamplingParams, params: models.Params, state: DecodeState, *,
                 eos_ids: tuple[int, ...], pad_id: int, decode_layout: str = "auto") -> DecodeState:
  """Decodes until every row is done or the token buffer is full; the state (and its KV cache) is donated.

  The column layout runs one `while_loop` per phase of `models.decode_windows`, each over a cache just long enough
  for it, so its attention (which reads the whole cache) skips most positions no row has reached yet.
  """
  max_new_tokens = state.tokens.shape[1]
  cache_len = state.cache.keys[0].shape[1]
  columns = _decodes_in_columns(config, decode_layout)
  if columns:
    # Laid out once, before the loop; the barrier keeps XLA from folding the transposes back into each step's dots.
    weights = jax.lax.optimization_barrier(models.column_weights(config, params))
    step_fn = functools.partial(models.decode_step_columns, config, weights)
    select = select_tokens_vocab_major  # the column step's logits are [V, B]
    windows = models.decode_windows(cache_len - max_new_tokens, cache_len)
    state = state.replace(cache=models.to_column_cache(config, state.cache, windows[0]))
  else:
    step_fn = functools.partial(models.decode_step, config, params, head=_decode_head(config, params))
    select = select_tokens
    windows = (cache_len,)

  def cond(s: DecodeState):
    go = (s.step < max_new_tokens) & ~jnp.all(s.done)
    if columns:  # every live row's next write (at its position) must fit the phase's cache [B, Hkv, D, window]
      go &= jnp.max(jnp.where(s.done, -1, s.positions)) < s.cache.keys[0].shape[-1]
    return go

  def body(s: DecodeState):
    active = ~s.done
    last = jax.lax.dynamic_index_in_dim(s.tokens, s.step - 1, axis=1, keepdims=False)
    logits, cache = step_fn(last, s.positions, s.cache, active=active)
    tok, lp = select(logits, _step_keys(s.keys, s.step), sampling)
    tok = jnp.where(active, tok, pad_id)
    lp = jnp.where(active, lp, 0.0)
    eos = active & _is_eos(tok, eos_ids)
    return DecodeState(
        step=s.step + 1,
        tokens=jax.lax.dynamic_update_index_in_dim(s.tokens, tok, s.step, axis=1),
        logprobs=jax.lax.dynamic_update_index_in_dim(s.logprobs, lp, s.step, axis=1),
        positions=s.positions + active.astype(jnp.int32),
        done=s.done | eos | (s.step + 1 >= max_new_tokens),
        eos_hit=s.eos_hit | eos,
        num_generated=s.num_generated + active.astype(jnp.int32),
        cache=cache,
        keys=s.keys)

  for i, window in enumerate(windows):
    if i:
      state = state.replace(cache=models.grow_column_cache(state.cache, window))
    state = jax.lax.while_loop(cond, body, state)
  return state.replace(cache=models.from_column_cache(state.cache)) if columns else state


decode_loop = functools.partial(jax.jit, static_argnames=("config", "sampling", "eos_ids", "pad_id", "decode_layout"),
                                donate_argnames="state")(_decode_loop)


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


@dataclasses.dataclass(frozen=True)
class ChunkPrograms:
  """The jitted programs of one chunk shape under a mesh, and how their inputs are laid out (for running, and for
  lowering with abstract arguments, e.g. for a topology with `prorl_jax.planning`).

  `prefill(params, ids [P, T], lengths [P], live [P], keys [B])` -> `DecodeState`; `decode(params, state)` ->
  `DecodeState` (donated).
  """

  prefill: Any
  decode: Any
  param_shardings: Any
  input_shardings: tuple[Any, ...]
  state_shardings: DecodeState


class Sampler:
  """Generates responses for lists of token-id prompts with a fixed model config.

  Args:
    config: the model config (its `attention_impl` chooses the decode-attention backend).
    pad_id: token written after each response's end.
    memory_budget_bytes: rows are generated in fixed-shape chunks that fit this budget (default: 40% of the device
      memory where JAX reports it, else 4 GiB).
    max_rows_per_chunk: an explicit cap on rows per chunk (rounded down to whole prompts).
    prompt_bucket: prompt lengths are padded up to a multiple of this, to limit recompilation.
    mesh: optional device mesh (e.g. `prorl_jax.parallel.make_mesh(config.mesh)`, or any mesh with some of the axes
      "data", "fsdp", "tensor"): rows are split over its batch axes, params and KV heads over "tensor". The memory
      budget is then per device, so a chunk holds budget rows times the number of row shards.
    decode_layout: "rows" decodes with `models.decode_step` (`[batch, features]` activations, `[B, S, Hkv, D]`
      caches, the decode-attention kernel), "columns" with `models.decode_step_columns` (feature-major activations,
      `[out, in]` weights, transposed caches and its own jnp attention: ~20% shorter decode steps on CPU, for a
      copy of the layer weights during the loop), "auto" picks columns on a single CPU device with the reference
      attention, rows elsewhere. Both give the same tokens up to float summation order.
  """

  def __init__(self, config: models.Qwen2Config, *, pad_id: int = 0, memory_budget_bytes: int | None = None,
               max_rows_per_chunk: int | None = None, prompt_bucket: int = 32, mesh: Mesh | None = None,
               decode_layout: str = "auto"):
    models.resolve_decode_layout(config, decode_layout, 1, "cpu")  # checks the name
    if decode_layout == "columns" and mesh is not None and mesh.size > 1:
      raise ValueError("decode_layout='columns' runs on one device; with a multi-device mesh use 'rows' or 'auto'")
    self.decode_layout = decode_layout
    self.config = config
    self.pad_id = int(pad_id)
    self.memory_budget_bytes = memory_budget_bytes or default_memory_budget(_local_bytes_limit())
    self.max_rows_per_chunk = max_rows_per_chunk
    self.prompt_bucket = prompt_bucket
    if mesh is not None and any(t != AxisType.Auto for t in mesh.axis_types):
      # Explicit axes (jax.make_mesh's default) would make every op sharding-typed; the sampler relies on GSPMD.
      mesh = Mesh(mesh.devices, mesh.axis_names, axis_types=(AxisType.Auto,) * len(mesh.axis_names))
    self.mesh = mesh
    # The platform the programs are compiled for: the mesh's devices (compile-only ones included), else the default.
    self.platform = mesh.devices.flat[0].platform if mesh is not None else jax.default_backend()
    self._sharded: dict[Any, Any] = {}

  @property
  def resolved_decode_layout(self) -> str:
    """"rows" or "columns": what `decode_layout` means for this sampler's devices."""
    return models.resolve_decode_layout(self.config, self.decode_layout, 1 if self.mesh is None else self.mesh.size,
                                        self.platform)

  def chunk_layout(self, longest_prompt: int, num_prompts: int, max_new_tokens: int,
                   num_samples: int) -> tuple[int, int]:
    """(padded prompt length, prompts per chunk) for `num_prompts` prompts of up to `longest_prompt` tokens: prompts
    padded to a multiple of `prompt_bucket`; as many prompts per chunk as the memory budget (per device, times the
    row shards) and `max_rows_per_chunk` allow, padded so every row shard holds the same number of whole rows."""
    prompt_len = int(math.ceil(longest_prompt / self.prompt_bucket) * self.prompt_bucket)
    shards = self._row_shards()
    rows = shards * rows_per_chunk(self.config, prompt_len=prompt_len, max_new_tokens=max_new_tokens,
                                   num_samples=num_samples, memory_budget_bytes=self.memory_budget_bytes)
    if self.max_rows_per_chunk:
      rows = min(rows, max(num_samples, self.max_rows_per_chunk // num_samples * num_samples))
    prompts_per_chunk = max(1, min(rows // num_samples, num_prompts))
    # Every row shard gets the same number of whole rows: pad the chunk with dead prompts to a multiple of this.
    multiple = shards // math.gcd(shards, num_samples)
    return prompt_len, -(-prompts_per_chunk // multiple) * multiple

  def generate(self, params: models.Params, prompts: Sequence[Sequence[int]], *, max_new_tokens: int,
               sampling: SamplingParams = SamplingParams(), num_samples: int = 1,
               eos_token_ids: int | Sequence[int] | None = None, seed: int | jax.Array = 0,
               row_ids: Sequence[int] | np.ndarray | None = None) -> RolloutBatch:
    """Samples `num_samples` responses of up to `max_new_tokens` tokens for every prompt.

    Row r (prompt r // num_samples) draws from PRNG key `fold_in(key(seed), row_ids[r])`; by default
    `row_ids = arange(len(prompts) * num_samples)`. Passing ids fixed per problem keeps its samples identical
    however the problems are batched.
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
    prompt_len, prompts_per_chunk = self.chunk_layout(longest, len(prompts), max_new_tokens, num_samples)
    if prompt_len + max_new_tokens > self.config.max_position_embeddings:
      raise ValueError(f"prompt ({longest}) + max_new_tokens ({max_new_tokens}) exceeds the model's "
                       f"max_position_embeddings ({self.config.max_position_embeddings})")
    if self.mesh is not None:
      params = jax.device_put(params, self._param_shardings(params))
    # A key from host data: a committed (e.g. replicated) key would pin the per-row keys' layout.
    base_key = (jax.random.wrap_key_data(np.asarray(jax.random.key_data(seed))) if isinstance(seed, jax.Array)
                else jax.random.key(int(seed)))
    outputs, steps, start = [], 0, time.perf_counter()
    for first in range(0, len(prompts), prompts_per_chunk):
      chunk = list(prompts[first:first + prompts_per_chunk])
      chunk_rows = row_ids[first * num_samples:(first + len(chunk)) * num_samples]
      state = self._run_chunk(params, chunk, chunk_rows, prompts_per_chunk, prompt_len, num_samples,
                              max_new_tokens, sampling, eos_ids, base_key)
      outputs.append(state)
      steps += int(state[0])
    tokens = np.concatenate([o[1] for o in outputs])
    logprobs = np.concatenate([o[2] for o in outputs])
    lengths = np.concatenate([o[3] for o in outputs])
    eos_hit = np.concatenate([o[4] for o in outputs])
    elapsed = time.perf_counter() - start
    stats = {"chunks": len(outputs), "rows_per_chunk": prompts_per_chunk * num_samples, "decode_steps": steps,
             "generated_tokens": int(lengths[:total].sum()), "seconds": elapsed,
             "prefill_seconds": sum(o[5][0] for o in outputs), "decode_seconds": sum(o[5][1] for o in outputs),
             "decode_layout": self.resolved_decode_layout,
             "tokens_per_second": float(lengths[:total].sum() / max(elapsed, 1e-9))}
    return RolloutBatch(prompt_index=np.repeat(np.arange(len(prompts), dtype=np.int32), num_samples),
                        tokens=tokens[:total], logprobs=logprobs[:total], lengths=lengths[:total],
                        finished_by_eos=eos_hit[:total], stats=stats)

  def _eos_tuple(self, eos_token_ids) -> tuple[int, ...]:
    if eos_token_ids is None:
      return tuple(self.config.eos_token_ids)
    if isinstance(eos_token_ids, (int, np.integer)):
      return (int(eos_token_ids),)
    return tuple(int(e) for e in eos_token_ids)

  def _run_chunk(self, params, chunk, chunk_rows, prompts_per_chunk, prompt_len, num_samples, max_new_tokens,
                 sampling, eos_ids, base_key):
    n_live = len(chunk)
    ids = np.full((prompts_per_chunk, prompt_len), self.pad_id, np.int32)
    lengths = np.ones((prompts_per_chunk,), np.int32)
    for i, p in enumerate(chunk):
      ids[i, :len(p)] = p
      lengths[i] = len(p)
    live = np.arange(prompts_per_chunk) < n_live
    # Padding rows of a short last chunk start done; their keys are never used.
    row_ids = np.zeros(prompts_per_chunk * num_samples, np.uint32)
    row_ids[:len(chunk_rows)] = chunk_rows
    keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(base_key, jnp.asarray(row_ids, jnp.uint32))
    # Phase times: waiting for the prefill's (small) first-token array before decoding costs one host round trip.
    start = time.perf_counter()
    if self.mesh is None:
      state = prefill_and_first_token(self.config, sampling, params, ids, lengths, live, keys, eos_ids=eos_ids,
                                      max_new_tokens=max_new_tokens, num_samples=num_samples,
                                      cache_len=prompt_len + max_new_tokens, pad_id=self.pad_id)
      state.step.block_until_ready()
      prefilled = time.perf_counter()
      state = decode_loop(self.config, sampling, params, state, eos_ids=eos_ids, pad_id=self.pad_id,
                          decode_layout=self.decode_layout)
    else:
      programs = self.chunk_programs(params, sampling, eos_ids, max_new_tokens, num_samples, ids.shape)
      # Placed explicitly: in a multi-process run jit refuses host arrays for sharded inputs.
      inputs = [jax.device_put(x, sh) for x, sh in zip((ids, lengths, live, keys), programs.input_shardings)]
      # The context mesh is what lets the model run the Pallas decode kernel per shard (models/layers.py).
      with jax.set_mesh(self.mesh):
        state = programs.prefill(params, *inputs)
        state.step.block_until_ready()
        prefilled = time.perf_counter()
        state = programs.decode(params, state)
    step, tokens, logprobs, lengths_out, eos_hit = jax.device_get(
        (state.step, state.tokens, state.logprobs, state.num_generated, state.eos_hit))
    rows = n_live * num_samples
    times = (prefilled - start, time.perf_counter() - prefilled)
    return step, tokens[:rows], logprobs[:rows], lengths_out[:rows], eos_hit[:rows], times

  # --- sharded execution ----------------------------------------------------------------------------------------

  def _row_shards(self) -> int:
    if self.mesh is None:
      return 1
    return mesh_lib.axis_size(self.mesh, mesh_lib.batch_axes(self.mesh))

  def _param_shardings(self, params: models.Params) -> Any:
    key = ("params", jax.tree.structure(params), tuple(x.shape for x in jax.tree.leaves(params)))
    if key not in self._sharded:
      self._sharded[key] = rules.param_shardings(self.config, params, self.mesh, mode="sample")
    return self._sharded[key]

  def chunk_programs(self, params, sampling: SamplingParams, eos_ids: tuple[int, ...], max_new_tokens: int,
                     num_samples: int, prompt_shape: tuple[int, int]) -> ChunkPrograms:
    """The jitted prefill and decode of one chunk shape `[prompts, prompt_len]` under the mesh, with explicit in/out
    shardings (params by the sampling rules, rows and KV cache over the batch axes); decode donates its state.
    `params` may be abstract (shapes only)."""
    key = ("fns", sampling, eos_ids, max_new_tokens, num_samples, tuple(prompt_shape), jax.tree.structure(params))
    if key in self._sharded:
      return self._sharded[key]
    mesh, config = self.mesh, self.config
    num_prompts, prompt_len = prompt_shape
    b, cache_len = num_prompts * num_samples, prompt_len + max_new_tokens
    rows = lambda *shape: NamedSharding(mesh, rules.rows_spec(shape, mesh, "rollout rows"))
    param_sh = self._param_shardings(params)
    state_sh = DecodeState(step=rules.replicated(mesh), tokens=rows(b, max_new_tokens),
                           logprobs=rows(b, max_new_tokens), positions=rows(b), done=rows(b), eos_hit=rows(b),
                           num_generated=rows(b), cache=rules.kv_cache_shardings(config, b, cache_len, mesh),
                           keys=rows(b))
    statics = dict(eos_ids=eos_ids, max_new_tokens=max_new_tokens, num_samples=num_samples, cache_len=cache_len,
                   pad_id=self.pad_id, mesh=mesh)
    input_sh = (rows(num_prompts, prompt_len), rows(num_prompts), rows(num_prompts), rows(b))
    prefill = jax.jit(
        lambda p, ids, lengths, live, keys: _prefill_and_first_token(config, sampling, p, ids, lengths, live, keys,
                                                                     **statics),
        in_shardings=(param_sh,) + input_sh, out_shardings=state_sh)
    decode = jax.jit(lambda p, state: _decode_loop(config, sampling, p, state, eos_ids=eos_ids, pad_id=self.pad_id,
                                                   decode_layout=self.decode_layout),
                     in_shardings=(param_sh, state_sh), out_shardings=state_sh, donate_argnums=1)
    self._sharded[key] = ChunkPrograms(prefill, decode, param_sh, input_sh, state_sh)
    return self._sharded[key]


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
