"""The plan of a run on a topology it does not have: does every phase fit in HBM, and how long is a step.

`plan(config, topology)` compiles, deviceless, every program of one training step for the topology's devices with
the trainer's own layout (`programs`), then reports per phase (prefill, decode, log-probs, update) the per-device
memory the compiler allots against the chip's HBM, the loop-aware FLOPs and bytes, and a roofline time; a
whole-step estimate; the hand memory model's prediction beside the compiler's figure; and, for a phase that does not
fit, the config changes the memory model (calibrated on the compiled figure) predicts to bring it under.

Times are estimates from the compiler's analysis, never measurements: a phase takes at least
max(FLOPs / peak FLOP/s, bytes / HBM bandwidth) at the chip's published peaks (`parallel.chips`).
"""

from __future__ import annotations

import copy
import dataclasses
import time
from typing import Any, Callable

import ml_collections

from prorl_jax import models, parallel
from prorl_jax.errors import ConfigError
from prorl_jax.parallel.topology import Topology, topology as build_topology
from prorl_jax.planning import programs as programs_lib
from prorl_jax.planning.programs import CompiledProgram
from prorl_jax.training import layout as layout_lib
from prorl_jax.training import memory, mfu
from prorl_jax.training.config import validate
from prorl_jax.training.state import make_optimizer

GiB = 1024**3
PHASES = ("prefill", "decode", "logprobs", "update")
_KERNELS = {"tpu_custom_call": "pallas_mosaic_tpu", "__gpu$xla.gpu.triton": "pallas_triton"}


def _gib(n: float) -> float:
  return round(n / GiB, 4)


def _size(gib: float) -> str:
  """A size for people: GiB above one, MiB below."""
  return f"{gib:.2f} GiB" if gib >= 1 else f"{gib * 1024:.1f} MiB"


def program_seconds(p: CompiledProgram, chip) -> float:
  """Roofline time of one run of `p` per device: max(FLOPs / peak, bytes / bandwidth)."""
  return max(p.cost.flops / chip.peak_bf16_flops, p.cost.bytes_accessed / chip.hbm_bytes_per_s)


def decode_kernel(decode: CompiledProgram) -> tuple[str, list[str]]:
  """(kernel family found in the compiled decode program, the custom calls that show it)."""
  calls = [c for c in decode.cost.custom_calls if c.split(":")[0] in _KERNELS]
  if not calls:
    return "reference", []
  return _KERNELS[calls[0].split(":")[0]], calls


def _hand_estimates(c: Any, model_config: models.Qwen2Config, layout: layout_lib.RunLayout,
                    shapes: programs_lib.StepShapes) -> dict[str, int]:
  """`training.memory`'s per-device prediction of each phase's peak (the trainer's own pre-flight estimate)."""
  train = memory.estimate_train(
      model_config, rows=shapes.mini_rows, prompt_len=c.data.max_prompt_length, response_len=c.rollout.max_new_tokens,
      micro_rows=c.batch.micro_batch_size, logprob_rows=c.batch.logprob_micro_batch_size or c.batch.micro_batch_size,
      mesh=layout.mesh, param_dtype=c.model.param_dtype, ref_dtype=c.model.ref_param_dtype,
      chunk_size=c.algorithm.logprob_chunk_size)
  roll = memory.estimate_rollout(
      model_config, rows=shapes.prompts_per_chunk * c.rollout.n, prompt_len=shapes.prompt_len,
      max_new_tokens=c.rollout.max_new_tokens, num_prompts=shapes.prompts_per_chunk, mesh=layout.sampler.mesh,
      param_dtype=c.model.param_dtype, rollout_dtype=c.model.rollout_param_dtype or None,
      decode_layout=layout.sampler.resolved_decode_layout)
  base = (train.resident + (roll.rollout_params if roll.duplicate_params else 0) + roll.kv_cache + roll.decode_state
          + roll.column_copy)
  return {"prefill": base + roll.prefill, "decode": base + roll.step_temp,
          "logprobs": train.resident + train.batch + train.logprob_forward,
          "update": train.resident + train.batch + train.update_temp}


def _row_shards(c: Any, devices: int) -> int:
  """Row shards of the training mesh config `c` would build over `devices` devices (data x fsdp)."""
  return parallel.mesh_shape(c.mesh, devices)["data"] * parallel.mesh_shape(c.mesh, devices)["fsdp"]


def _candidates(c: Any, phase: str, model_config: models.Qwen2Config, devices: int) -> list[dict[str, Any]]:
  """Config changes that lower a phase's memory, mildest first: single fields, then a tensor-parallel split paired
  with the micro-batch sizes it makes possible. Micro-batches never go below one row per row shard (smaller ones
  are replicated, not split)."""
  mini = c.batch.mini_batch_prompts * c.rollout.n
  singles: list[dict[str, Any]] = []
  tensor_splits = [{"mesh.tensor": t, "mesh.fsdp": -1, "mesh.data": 1} for t in (2, 4, 8)
                   if t > c.mesh.tensor and model_config.num_key_value_heads % t == 0 and devices % t == 0]

  def micro_sizes(field: str, current: int, shards: int) -> list[dict[str, Any]]:
    out, size = [], current // 2
    while size >= shards:
      if mini % size == 0 and size % shards == 0:
        out.append({field: size})
      size //= 2
    return out

  if phase in ("update", "logprobs"):
    field = "batch.micro_batch_size" if phase == "update" else "batch.logprob_micro_batch_size"
    current = (c.batch.micro_batch_size or mini) if phase == "update" else (
        c.batch.logprob_micro_batch_size or c.batch.micro_batch_size or mini)
    singles += micro_sizes(field, current, _row_shards(c, devices))
    if not c.model.remat:
      singles.append({"model.remat": True})
    if c.model.ref_param_dtype == "float32":
      singles.append({"model.ref_param_dtype": "bfloat16"})
    chunk = c.algorithm.logprob_chunk_size // 2
    while chunk >= 128:
      singles.append({"algorithm.logprob_chunk_size": chunk})
      chunk //= 2
    pairs = [dict(t, **m) for t in tensor_splits
             for m in micro_sizes(field, current, _row_shards(with_changes(c, t), devices))]
  else:
    if c.model.rollout_param_dtype != "bfloat16" and c.model.param_dtype != "bfloat16":
      singles.append({"model.rollout_param_dtype": "bfloat16"})
    budget = c.rollout.memory_budget_gb or 0
    singles += [{"rollout.memory_budget_gb": float(gb)} for gb in (32, 24, 16, 12, 8, 6, 4, 3, 2, 1)
                if not budget or gb < budget]
    pairs = []
  return singles + tensor_splits + pairs


def with_changes(c: Any, changes: dict[str, Any]) -> Any:
  """A copy of config `c` with dotted fields set (`{"batch.micro_batch_size": 8}`)."""
  c = copy.deepcopy(c)
  with c.unlocked():
    for field, value in changes.items():
      node = c
      *parents, leaf = field.split(".")
      for part in parents:
        node = node[part]
      node[leaf] = value
  return c


def suggest_fixes(c: Any, phase: str, model_config: models.Qwen2Config, topo: Topology, compiled_peak: int,
                  estimated_peak: int, limit: int = 3) -> list[dict[str, Any]]:
  """Config changes predicted to bring `phase` under the chip's HBM: the hand memory model re-run with the change,
  scaled by this phase's compiled / estimated ratio. Each: {"set": {field: value}, "predicted_gib": float}."""
  ratio = compiled_peak / max(estimated_peak, 1)
  fixes = []
  for change in _candidates(c, phase, model_config, len(topo.devices)):
    try:
      changed = validate(with_changes(c, change))
      mesh = layout_lib.run_mesh(changed, topo.devices)
      layout = _light_layout(changed, model_config, mesh, topo)
      shapes = programs_lib.step_shapes(changed, layout)
      predicted = _hand_estimates(changed, _model(changed, model_config), layout, shapes)[phase] * ratio
    except Exception:  # a change the config or the mesh refuses is no fix
      continue
    if predicted <= topo.chip.hbm_bytes:
      fixes.append({"set": change, "predicted_gib": _gib(predicted)})
      if len(fixes) >= limit:
        break
  return fixes


def compile_phase(c: Any, model_config: models.Qwen2Config, topo: Topology, phase: str) -> tuple[int, bool]:
  """(compiled per-device peak in bytes, whether it fits) of one phase of config `c` (e.g. to check a fix)."""
  c = validate(c)
  model_config = _model(c, model_config)
  layout = _light_layout(c, model_config, layout_lib.run_mesh(c, topo.devices), topo)
  shapes = programs_lib.step_shapes(c, layout)
  optimizer = make_optimizer(c.optimizer)
  state = programs_lib.place(programs_lib.abstract_state(c, model_config, optimizer), layout.state_sharding)
  quiet = lambda _: None
  if phase in ("prefill", "decode"):
    progs = programs_lib.rollout_programs(c, model_config, layout, shapes, programs_lib.tree_bytes(state), quiet)
    progs = [p for p in progs if p.name == phase]
  else:
    progs = programs_lib.train_programs(c, layout, state, shapes, quiet, phases=(phase,))[phase]
  peak = max(p.peak_bytes for p in progs)
  return peak, peak <= topo.chip.hbm_bytes and not any(p.out_of_memory for p in progs)


def verify_fixes(c: Any, phase: str, model_config: models.Qwen2Config, topo: Topology, fixes: list[dict[str, Any]],
                 log: Callable[[str], None], tries: int = 2) -> None:
  """Compiles `phase` with each of the first `tries` fixes until one fits; records `verified_gib` on those tried."""
  for fix in fixes[:tries]:
    shown = " ".join(f"--config.{k}={v}" for k, v in fix["set"].items())
    log(f"verifying a fix for {phase}: {shown}")
    try:
      peak, fits = compile_phase(with_changes(c, fix["set"]), model_config, topo, phase)
    except Exception as e:  # a change the compiler refuses is no fix
      fix["verified_error"] = str(e).splitlines()[0][:300]
      continue
    fix["verified_gib"] = _gib(peak)
    fix["verified_fits"] = fits
    if fix["verified_fits"]:
      return


def _model(c: Any, model_config: models.Qwen2Config) -> models.Qwen2Config:
  return model_config.replace(dtype=c.model.compute_dtype, remat=bool(c.model.remat),
                              attention_impl=c.model.attention_impl)


def _light_layout(c: Any, model_config: models.Qwen2Config, mesh, topo: Topology) -> layout_lib.RunLayout:
  model_config = _model(c, model_config)
  optimizer = make_optimizer(c.optimizer)
  state = programs_lib.abstract_state(c, model_config, optimizer)
  return layout_lib.build_layout(c, model_config, state, optimizer, mesh=mesh, pad_id=0, processes=topo.processes,
                                 local_devices=topo.local_devices(0),
                                 device_bytes_limit=topo.chip.hbm_bytes)


def _phase_entry(name: str, progs: list[CompiledProgram], chip, estimate: int) -> dict[str, Any]:
  peak = max(p.peak_bytes for p in progs)
  flops = sum(p.cost.flops * p.runs_per_step for p in progs)
  bytes_accessed = sum(p.cost.bytes_accessed * p.runs_per_step for p in progs)
  seconds = sum(program_seconds(p, chip) * p.runs_per_step for p in progs)
  refused = [p.out_of_memory for p in progs if p.out_of_memory]
  extra = {"out_of_memory": refused[0], "cost_known": False} if refused else {"cost_known": True}
  return {
      **extra,
      "peak_gib": _gib(peak), "fits": peak <= chip.hbm_bytes and not refused,
      "over_gib": _gib(max(peak - chip.hbm_bytes, 0)),
      "flops": flops, "bytes_accessed": bytes_accessed, "est_seconds": seconds,
      "bound": "compute" if flops / chip.peak_bf16_flops >= bytes_accessed / chip.hbm_bytes_per_s else "memory",
      "estimator_gib": _gib(estimate), "estimator_error": round(estimate / peak - 1, 4),
      "programs": [_program_entry(p, chip) for p in progs],
  }


def _program_entry(p: CompiledProgram, chip) -> dict[str, Any]:
  return {
      "name": p.name, "runs_per_step": p.runs_per_step, "peak_gib": _gib(p.peak_bytes),
      "argument_gib": _gib(p.argument_bytes), "output_gib": _gib(p.output_bytes), "temp_gib": _gib(p.temp_bytes),
      "alias_gib": _gib(p.alias_bytes), "code_gib": _gib(p.code_bytes), "resident_gib": _gib(p.resident_bytes),
      "flops_per_run": p.cost.flops, "bytes_accessed_per_run": p.cost.bytes_accessed,
      "est_seconds_per_run": program_seconds(p, chip), "compile_seconds": round(p.compile_seconds, 1),
      **({"out_of_memory": p.out_of_memory} if p.out_of_memory else {}),
      "loops": [dict(op_name=l.op_name, trips=l.trips, known=l.known) for l in p.cost.loops],
      "compiler_once": p.compiler,  # XLA's own analysis: each loop body counted once
  }


def plan(config: ml_collections.ConfigDict, topology_name: str, num_slices: int = 1, *, hbm_gib: float | None = None,
         dump_hlo: str | None = None, verify: bool = True,
         log: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
  """Compiles one training step of `config` for `num_slices` slices of `topology_name`; returns the plan (see the
  module docstring and README "Planning a run"). `hbm_gib` plans against that much memory per device instead of the
  chip's (e.g. to keep headroom); `dump_hlo` writes each program's optimized HLO there; `verify` compiles a phase
  that does not fit again with the suggested fixes (the first two) to confirm one. Raises ConfigError /
  CheckpointError / TopologyError for bad input, TopologyUnavailable when the compiler for the platform is missing."""
  start = time.perf_counter()
  programs_lib.DUMP_DIR[0] = dump_hlo
  c = validate(config)
  topo = build_topology(topology_name, num_slices)
  if hbm_gib is not None:
    if hbm_gib <= 0:
      raise ConfigError(f"--hbm_gib must be > 0, got {hbm_gib}")
    topo = dataclasses.replace(topo, chip=dataclasses.replace(topo.chip, hbm_bytes=int(hbm_gib * GiB)))
  log(topo.describe)
  model_config, source = models.load_architecture(c.model.path, revision=c.model.revision or None,
                                                  dtype=c.model.compute_dtype, remat=bool(c.model.remat),
                                                  attention_impl=c.model.attention_impl)
  log(f"model: {source} ({model_config.num_params() / 1e9:.2f}B parameters)")
  mesh = layout_lib.run_mesh(c, topo.devices)
  if topo.processes > 1 and (c.batch.prompts % topo.processes or c.batch.gen_prompts % topo.processes):
    raise ConfigError(f"config.batch.prompts ({c.batch.prompts}) and batch.gen_prompts "
                             f"({c.batch.gen_prompts}) must be multiples of the topology's {topo.processes} hosts")
  optimizer = make_optimizer(c.optimizer)
  state = programs_lib.abstract_state(c, model_config, optimizer)
  layout = layout_lib.build_layout(c, model_config, state, optimizer, mesh=mesh, pad_id=0, processes=topo.processes,
                                   local_devices=topo.local_devices(0),
                                   device_bytes_limit=topo.chip.hbm_bytes)
  state = programs_lib.place(state, layout.state_sharding)
  shapes = programs_lib.step_shapes(c, layout)
  log(f"{parallel.describe(mesh)}; rollout on {parallel.describe(layout.sampler.mesh)}")
  state_bytes = programs_lib.tree_bytes(state)
  prefill, decode = programs_lib.rollout_programs(c, model_config, layout, shapes, state_bytes, log)
  train = programs_lib.train_programs(c, layout, state, shapes, log)
  chip = topo.chip
  estimates = _hand_estimates(c, model_config, layout, shapes)
  phases = {"prefill": _phase_entry("prefill", [prefill], chip, estimates["prefill"]),
            "decode": _phase_entry("decode", [decode], chip, estimates["decode"]),
            "logprobs": _phase_entry("logprobs", train["logprobs"], chip, estimates["logprobs"]),
            "update": _phase_entry("update", train["update"], chip, estimates["update"])}
  kernel, calls = decode_kernel(decode)
  wanted_pallas = c.model.attention_impl == "pallas" and topo.platform in ("tpu", "gpu")
  if wanted_pallas and kernel == "reference":
    phases["decode"]["fits"] = False
    phases["decode"]["error"] = ("model.attention_impl='pallas' but the compiled decode program holds no Pallas "
                                 "kernel (custom call)")
  programs = {"prefill": [prefill], "decode": [decode], **train}
  for name, entry in phases.items():
    if not entry["fits"] and "error" not in entry:
      peak = max(p.peak_bytes for p in programs[name])
      entry["fixes"] = suggest_fixes(c, name, model_config, topo, peak, estimates[name])
      if verify:
        verify_fixes(c, name, model_config, topo, entry["fixes"], log)
  return {
      "topology": topo.name, "num_slices": topo.num_slices, "chip": topo.chip.name, "devices": len(topo.devices),
      "hosts": topo.processes, "hbm_gib": _gib(chip.hbm_bytes), "fits": all(p["fits"] for p in phases.values()),
      "decode_kernel": kernel, "decode_custom_calls": calls, "phases": phases,
      **_step_rates(c, model_config, topo, shapes, phases),
      "model": {"source": source, "parameters": model_config.num_params(), "compute_dtype": model_config.dtype,
                "remat": model_config.remat},
      "mesh": parallel.describe(mesh), "rollout_mesh": parallel.describe(layout.sampler.mesh),
      "step": dict(shapes.as_dict(), rows_per_chunk=shapes.prompts_per_chunk * c.rollout.n,
                   max_new_tokens=c.rollout.max_new_tokens, gen_batches_assumed=1),
      "chip_figures": {"hbm_bytes": chip.hbm_bytes, "peak_bf16_flops": chip.peak_bf16_flops,
                       "hbm_bytes_per_s": chip.hbm_bytes_per_s, "source": chip.source},
      "assumptions": ("times are roofline estimates from the compiler's per-device HLO (loop bodies multiplied by "
                      "their trip counts), at the chip's published peaks: not measurements; every rollout chunk "
                      "decodes to max_new_tokens (an upper bound); one generation batch per step (dynamic sampling "
                      "may need more)"),
      "compile_seconds": round(time.perf_counter() - start, 1),
  }


def _step_rates(c: Any, model_config: models.Qwen2Config, topo: Topology, shapes: Any,
                phases: dict[str, dict[str, Any]]) -> dict[str, Any]:
  """The whole-step roofline estimate and what it implies: tokens/s per chip, MFU, HBM bandwidth use."""
  chip, chips = topo.chip, len(topo.devices)
  step_s = sum(p["est_seconds"] for p in phases.values())  # phases the compiler refused count 0 (cost_known False)
  seq = c.data.max_prompt_length + c.rollout.max_new_tokens
  trained_tokens = shapes.step_rows * seq
  generated = c.batch.gen_prompts * c.rollout.n * c.rollout.max_new_tokens
  # Model FLOPs of a step (PaLM counting, `training.mfu`): rollout forwards of every generated token at full context,
  # then log-prob passes and the update (5 forwards) over the trained batch.
  model_flops = (generated * mfu.forward_flops_per_sequence(model_config, 0, seq) / seq
                 + shapes.step_rows * c.batch.ppo_epochs * mfu.update_flops_per_sequence(
                     model_config, c.data.max_prompt_length, c.rollout.max_new_tokens))
  device_flops = sum(p["flops"] for p in phases.values())
  device_bytes = sum(p["bytes_accessed"] for p in phases.values())
  return {
      "step_estimate_s": step_s, "step_estimate_complete": all(p["cost_known"] for p in phases.values()),
      "tokens_per_s_per_chip": trained_tokens / step_s / chips if step_s else 0.0,
      "generated_tokens_per_s_per_chip": generated / step_s / chips if step_s else 0.0,
      "mfu": model_flops / (step_s * chips * chip.peak_bf16_flops) if step_s else 0.0,
      "hbm_bandwidth_fraction": device_bytes / (step_s * chip.hbm_bytes_per_s) if step_s else 0.0,
      "device_flops_per_step": device_flops, "device_bytes_per_step": device_bytes,
  }


def failure_message(result: dict[str, Any]) -> str:
  """One paragraph per phase that does not fit: how far over, and the changes predicted to fix it."""
  lines = []
  for name in PHASES:
    entry = result["phases"][name]
    if entry["fits"]:
      continue
    if "error" in entry:
      lines.append(f"{name}: {entry['error']}")
      continue
    text = (f"{name} needs {_size(entry['peak_gib'])} per device, {_size(entry['over_gib'])} over the "
            f"{_size(result['hbm_gib'])} HBM of a {result['chip']} device")
    if "out_of_memory" in entry:
      text = f"{name} does not compile for a {result['chip']} device: {entry['out_of_memory']}"
    fixes = entry.get("fixes") or []
    if fixes:
      def describe(fix):
        flags = " ".join(f"--config.{k}={v}" for k, v in fix["set"].items())
        if "verified_gib" in fix:
          verdict = "fits" if fix["verified_fits"] else "does not fit"
          return f"{flags} (compiled: {_size(fix['verified_gib'])}, {verdict})"
        return f"{flags} (estimated ~{_size(fix['predicted_gib'])})"
      text += "; changes predicted to fit: " + "; ".join(describe(f) for f in fixes)
    else:
      text += ("; no change of batch.micro_batch_size, batch.logprob_micro_batch_size, model.remat, "
               "model.ref_param_dtype, algorithm.logprob_chunk_size, rollout.memory_budget_gb or mesh.tensor is "
               "predicted to fit: use more chips (a larger topology or --num_slices)")
    lines.append(text)
  return "\n".join(lines)


def table(result: dict[str, Any]) -> str:
  """The plan as a text table (what `experiments.plan` prints)."""
  head = (f"plan: {result['topology']}{' x ' + str(result['num_slices']) if result['num_slices'] > 1 else ''} "
          f"({result['devices']} x {result['chip']}, {result['hbm_gib']:.1f} GiB HBM each, {result['hosts']} "
          f"host{'s' if result['hosts'] > 1 else ''}); {result['mesh']}; decode kernel: {result['decode_kernel']}")
  rows = [head, "",
          f"{'phase':<10}{'peak GiB':>10}{'fits':>6}{'estimator':>11}{'TFLOP/step':>12}{'GB/step':>10}"
          f"{'est. s/step':>13}  bound"]
  for name in PHASES:
    p = result["phases"][name]
    rows.append(f"{name:<10}{p['peak_gib']:>10.2f}{'yes' if p['fits'] else 'NO':>6}{p['estimator_gib']:>11.2f}"
                f"{p['flops'] / 1e12:>12.1f}{p['bytes_accessed'] / 1e9:>10.1f}{p['est_seconds']:>13.2f}  {p['bound']}")
  if not result["step_estimate_complete"]:
    rows += ["", "no step estimate: a phase did not compile for this chip (see below)"]
  else:
    rows += ["", f"step estimate {result['step_estimate_s']:.1f} s (compiler-based roofline, not a measurement); "
             f"{result['tokens_per_s_per_chip']:.0f} trained tokens/s/chip, "
             f"{result['generated_tokens_per_s_per_chip']:.0f} generated tokens/s/chip; MFU {result['mfu']:.1%}"]
  return "\n".join(rows)


__all__ = ["PHASES", "decode_kernel", "failure_message", "plan", "program_seconds", "suggest_fixes", "table"]
