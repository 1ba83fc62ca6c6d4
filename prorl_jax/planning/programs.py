"""Compiles, without devices, every jitted program one training step runs, with the trainer's own layout.

Each program gets abstract arguments (`jax.ShapeDtypeStruct` with the shardings the trainer gives the real ones)
at the config's real shapes, is lowered under the mesh the trainer runs it under and compiled for the topology's
devices. The result keeps the compiler's memory analysis, the loop-aware cost (`hlo_cost`) and the kernels it holds.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec

from prorl_jax import models, rollout
from prorl_jax.parallel import rules
from prorl_jax.planning import hlo_cost
from prorl_jax.training import update
from prorl_jax.training.layout import RunLayout, train_batch_shapes


@dataclasses.dataclass(frozen=True)
class CompiledProgram:
  """One compiled program of a phase, per device.

  `resident_bytes` are the step's buffers that stay allocated while the program runs but are not among its arguments
  (e.g. the optimizer state during a log-prob pass); `peak_bytes` adds them to the program's own
  arguments + outputs + temporaries + code - aliased bytes (donated inputs reused as outputs).
  """

  name: str
  argument_bytes: int
  output_bytes: int
  temp_bytes: int
  alias_bytes: int
  code_bytes: int
  resident_bytes: int
  compile_seconds: float
  cost: hlo_cost.ProgramCost
  compiler: dict[str, float]
  runs_per_step: int
  # The compiler's refusal when the program cannot fit (XLA:TPU stops with RESOURCE_EXHAUSTED); the bytes above are
  # then what it reported it would need.
  out_of_memory: str = ""

  @property
  def program_bytes(self) -> int:
    return self.argument_bytes + self.output_bytes + self.temp_bytes + self.code_bytes - self.alias_bytes

  @property
  def peak_bytes(self) -> int:
    return self.program_bytes + self.resident_bytes


def _abstract(tree: Any, shardings: Any) -> Any:
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)


def tree_bytes(tree: Any) -> int:
  """Bytes one device holds of a tree of sharded abstract arrays (`ShapeDtypeStruct` with `.sharding`)."""
  total = 0
  for x in jax.tree.leaves(tree):
    sharding = getattr(x, "sharding", None)
    itemsize = jnp.dtype(x.dtype).itemsize if not jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else 8
    if isinstance(sharding, NamedSharding):
      total += rules.shard_bytes(x.shape, itemsize, sharding.spec, sharding.mesh)
    else:
      total += math.prod(x.shape) * itemsize
  return total


# Where `_compile` writes each program's optimized HLO (`experiments.plan --dump_hlo=DIR`); None: nowhere.
DUMP_DIR: list[str | None] = [None]


def _compile(name: str, fn: Any, args: tuple, kwargs: dict, mesh, *, resident_bytes: int, runs_per_step: int,
             unknown_trips: int = 1) -> CompiledProgram:
  start = time.perf_counter()
  with jax.set_mesh(mesh):
    lowered = fn.lower(*args, **kwargs)
    try:
      compiled = lowered.compile()
    except jax.errors.JaxRuntimeError as e:
      if "RESOURCE_EXHAUSTED" not in str(e):
        raise
      return _out_of_memory(name, str(e), args, resident_bytes, runs_per_step, time.perf_counter() - start)
  seconds = time.perf_counter() - start
  stats = compiled.memory_analysis()
  text = compiled.as_text()
  if DUMP_DIR[0]:
    os.makedirs(DUMP_DIR[0], exist_ok=True)
    with open(os.path.join(DUMP_DIR[0], f"{name}.hlo.txt"), "w") as f:
      f.write(text)
  return CompiledProgram(
      name=name, argument_bytes=int(stats.argument_size_in_bytes), output_bytes=int(stats.output_size_in_bytes),
      temp_bytes=int(stats.temp_size_in_bytes), alias_bytes=int(stats.alias_size_in_bytes),
      code_bytes=int(stats.generated_code_size_in_bytes), resident_bytes=int(resident_bytes),
      compile_seconds=seconds, cost=hlo_cost.program_cost(text, unknown_trips=unknown_trips),
      compiler=hlo_cost.compiler_cost(compiled), runs_per_step=runs_per_step)


_SIZE = re.compile(r"([\d.]+)([KMGT]?)(?:i?B)?\b")
_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def _bytes(text: str) -> int:
  match = _SIZE.fullmatch(text.strip())
  return int(float(match.group(1)) * _UNITS[match.group(2)]) if match else 0


def _out_of_memory(name: str, message: str, args: tuple, resident_bytes: int, runs_per_step: int,
                   seconds: float) -> CompiledProgram:
  """A program the compiler refused for lack of HBM (XLA:TPU: "the total memory required for HLO temporaries
  (25.49G) exceeds available HBM (15.75G)"): its arguments and the temporaries the compiler asked for."""
  first = next((l for l in message.splitlines() if "RESOURCE_EXHAUSTED" in l), message.splitlines()[0])
  temps = re.search(r"required for HLO temporaries \(([^)]+)\)", first)
  return CompiledProgram(
      name=name, argument_bytes=tree_bytes(args), output_bytes=0, temp_bytes=_bytes(temps.group(1)) if temps else 0,
      alias_bytes=0, code_bytes=0, resident_bytes=int(resident_bytes), compile_seconds=seconds,
      cost=hlo_cost.ProgramCost(0.0, 0.0, 0.0, (), ()), compiler={}, runs_per_step=runs_per_step,
      out_of_memory=first.strip())


@dataclasses.dataclass(frozen=True)
class StepShapes:
  """The sizes of one training step the programs are compiled for (per host process for the rollout)."""

  rollout_prompts: int  # prompts one process samples per generation batch
  prompt_len: int  # padded prompt length of a rollout chunk
  prompts_per_chunk: int
  chunks: int
  step_rows: int  # rows of the training batch after dynamic sampling (batch.prompts x n)
  mini_rows: int
  micro_rows: int
  logprob_rows: int
  updates: int  # optimizer updates per step (ppo_epochs x mini-batches)
  bucketed: bool  # length buckets on (micro-batches trimmed per bucket); the programs are the same either way

  def as_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)


def step_shapes(c: Any, layout: RunLayout) -> StepShapes:
  """What one step of config `c` runs on `layout` (see `StepShapes`)."""
  prompts = c.batch.gen_prompts // layout.processes
  plan = layout.sampler.plan(c.data.max_prompt_length, prompts, c.rollout.max_new_tokens, c.rollout.n)
  prompt_len, per_chunk = plan.prompt_len, plan.fill_prompts
  mini = c.batch.mini_batch_prompts * c.rollout.n
  micro = c.batch.micro_batch_size or mini
  return StepShapes(rollout_prompts=prompts, prompt_len=prompt_len, prompts_per_chunk=per_chunk,
                    chunks=-(-prompts // per_chunk), step_rows=c.batch.prompts * c.rollout.n, mini_rows=mini,
                    micro_rows=micro, logprob_rows=c.batch.logprob_micro_batch_size or micro,
                    updates=c.batch.ppo_epochs * (c.batch.prompts // c.batch.mini_batch_prompts),
                    bucketed=bool(c.batch.length_buckets_per_octave))


def _params_shapes(model_config: models.Qwen2Config, dtype: Any) -> Any:
  return jax.eval_shape(lambda: models.init_params(model_config, jax.random.key(0), dtype=dtype))


def rollout_programs(c: Any, model_config: models.Qwen2Config, layout: RunLayout, shapes: StepShapes,
                     state_bytes: int, log: Callable[[str], None]) -> list[CompiledProgram]:
  """The prefill that fills the sampler's slots and the decode loop over them (a segment at the full cache), as
  `Sampler.generate` runs them, with the train state resident. Every row is taken to decode to max_new_tokens: the
  slots are filled `chunks` times, each running max_new_tokens - 1 steps."""
  sampler = layout.sampler
  dtype = c.model.rollout_param_dtype or c.model.param_dtype
  params = _params_shapes(model_config, jnp.dtype(dtype))
  sampling = rollout.SamplingParams(temperature=c.rollout.temperature, top_p=c.rollout.top_p, top_k=c.rollout.top_k)
  eos_ids = tuple(model_config.eos_token_ids) or (0,)
  prompts, n, new = shapes.prompts_per_chunk, c.rollout.n, c.rollout.max_new_tokens
  plan = sampler.plan(c.data.max_prompt_length, shapes.rollout_prompts, new, n)
  programs = sampler.programs(params, sampling, eos_ids, new, n, plan)
  params = _abstract(params, programs.param_shardings)
  keys = jax.eval_shape(lambda: jax.random.split(jax.random.key(0), prompts * n))
  inputs = [jax.ShapeDtypeStruct((prompts, plan.prompt_len), jnp.int32), jax.ShapeDtypeStruct((prompts,), jnp.int32),
            jax.ShapeDtypeStruct((prompts,), jnp.bool_), keys]
  inputs = [jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s) for x, s in zip(inputs, programs.input_shardings(
      prompts))]
  # A process's rollout: the train state stays on device; the sampler's params are a second (sampling-layout) copy.
  mesh, window = sampler.mesh, plan.windows[-1]
  log(f"compiling prefill ({prompts} prompts x {plan.prompt_len} tokens per fill of {plan.slots} slots)")
  prefill = _compile("prefill", programs.prefill(prompts), (params, *inputs), {}, mesh, resident_bytes=state_bytes,
                     runs_per_step=shapes.chunks)
  with jax.set_mesh(mesh):
    weights = jax.eval_shape(programs.prepare(), params)
    slots = jax.eval_shape(programs.empty(window))
  slots = _abstract(slots, programs.state_shardings(window))
  target = jax.ShapeDtypeStruct((), jnp.int32, sharding=NamedSharding(mesh, PartitionSpec()))
  log(f"compiling decode ({plan.slots} slots, cache {window})")
  decode = _compile("decode", programs.segment(window), (_weights(weights, params), slots, target), {}, mesh,
                    resident_bytes=state_bytes, runs_per_step=shapes.chunks, unknown_trips=new - 1)
  return [prefill, decode]


def _weights(weights: Any, params: Any) -> Any:
  """The decoder's weights as abstract arrays laid out as `prepare` leaves them: the params (rows layout) with their
  sampling shardings, and an LM-head copy (CPU only) as the compiler places it."""
  return (params,) + tuple(weights[1:]) if isinstance(weights, tuple) else weights


def _rows(x: jax.ShapeDtypeStruct, sharding: NamedSharding) -> jax.ShapeDtypeStruct:
  """`x` laid out like a batch row array (the trainer places every per-row array with the mini-batch's specs)."""
  spec = rules.rows_spec(x.shape, sharding.mesh)
  return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=NamedSharding(sharding.mesh, spec))


def train_programs(c: Any, layout: RunLayout, state: Any, shapes: StepShapes, log: Callable[[str], None],
                   phases: tuple[str, ...] = ("logprobs", "update")) -> dict[str, list[CompiledProgram]]:
  """The log-prob passes and the update of one step (those of them in `phases`), on the micro-batch path the
  trainer takes (the widest bucket when length bucketing is on), with the train state and the step's batch
  resident."""
  fns, mesh, bs = layout.step_fns, layout.mesh, layout.batch_sharding
  p, r = c.data.max_prompt_length, c.rollout.max_new_tokens
  step = jax.tree.map(lambda x: _rows(x, bs.input_ids), train_batch_shapes(c, shapes.step_rows))
  mini = jax.tree.map(lambda x: _rows(x, bs.input_ids), train_batch_shapes(c, shapes.mini_rows))
  replicated = NamedSharding(mesh, PartitionSpec())
  state_bytes, step_bytes = tree_bytes(state), tree_bytes(step)
  ids, mask = step.input_ids, step.attention_mask
  out = {"logprobs": [], "update": []}
  widths = dict(prompt_width=p, response_width=r)
  # Resident besides a pass's own arguments: the rest of the state, the response mask, and for the reference pass
  # the policy's log-probs and entropy from the pass before.
  passes = (("old_logprobs", state.params, True, tree_bytes(step.response_mask)),
            ("ref_logprobs", state.ref_params, False, tree_bytes((step.response_mask, step.old_logp, step.old_logp))))
  for name, params, entropy, batch_bytes in passes if "logprobs" in phases else ():
    others = state_bytes - tree_bytes(params) + batch_bytes
    log(f"compiling {name} ({shapes.logprob_rows} rows x {p + r} tokens)")
    buffer = (step.old_logp, step.old_logp) if entropy else step.old_logp
    rows = jax.ShapeDtypeStruct((shapes.logprob_rows,), jnp.int32, sharding=replicated)
    out["logprobs"].append(_compile(name, fns.jit_micro_logprobs, (params, buffer, ids, mask, rows),
                                    dict(widths, with_entropy=entropy), mesh, resident_bytes=others,
                                    runs_per_step=shapes.step_rows // shapes.logprob_rows))
  if "update" not in phases:
    return out
  with jax.set_mesh(mesh):
    acc = jax.eval_shape(fns.jit_zero_accumulator, state.params)
  acc = (_abstract(acc[0], layout.state_sharding.params), _abstract(acc[1], jax.tree.map(lambda _: replicated,
                                                                                         acc[1])))
  rows = jax.ShapeDtypeStruct((shapes.micro_rows,), jnp.int32, sharding=replicated)
  count = jax.ShapeDtypeStruct((), jnp.float32, sharding=replicated)
  norm = update.Normalizer(count, count, r)
  others = state_bytes - tree_bytes(state.params) + step_bytes
  log(f"compiling update: accumulate one micro-batch ({shapes.micro_rows} rows x {p + r} tokens)")
  out["update"].append(_compile(
      "accumulate", fns.jit_micro_accumulate, (state.params, acc, mini, rows, norm), widths, mesh,
      resident_bytes=others, runs_per_step=shapes.updates * (shapes.mini_rows // shapes.micro_rows)))
  log("compiling update: apply gradients")
  out["update"].append(_compile("apply_gradients", fns.jit_apply_gradients, (state, *acc), {}, mesh,
                                resident_bytes=step_bytes + tree_bytes(mini), runs_per_step=shapes.updates))
  return out


def abstract_state(c: Any, model_config: models.Qwen2Config, optimizer: Any) -> Any:
  """The `TrainState` a run of config `c` holds, as shapes."""
  from prorl_jax.training.state import create_train_state

  ref = jnp.dtype(c.model.ref_param_dtype) if c.model.ref_param_dtype else None
  return jax.eval_shape(lambda: create_train_state(
      models.init_params(model_config, jax.random.key(0), dtype=jnp.dtype(c.model.param_dtype)), optimizer,
      seed=c.seed, ref_dtype=ref))


def place(tree: Any, shardings: Any) -> Any:
  """Abstract arrays of `tree` carrying `shardings`."""
  return _abstract(tree, shardings)

