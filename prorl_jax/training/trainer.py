"""The ProRLv2 training loop: the one place that knows the order of a step.

Each step: prompts -> n rollouts per prompt -> rewards (+ length shaping on its schedule) -> dynamic sampling with
batch refill -> old and reference log-probs (temperature-scaled) -> advantages -> mini-batch updates -> metrics;
then, on their schedules, validation, reference resets and checkpoints. Rerunning with the same workdir resumes
from the latest checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import time
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from prorl_jax import algorithms, evaluation, models, parallel, rollout
from prorl_jax.data import PipelineConfig, PromptPipeline, encode_prompt
from prorl_jax.rewards import RewardManager
from prorl_jax.data.specs import load_spec
from prorl_jax.training import checkpointing, experience, metrics_log, mfu, micro_batches, multihost, report, update
from prorl_jax.training import layout as layout_lib
from prorl_jax.training import config as config_lib
from prorl_jax.training.config import validate
from prorl_jax.training.errors import TrainingError
from prorl_jax.training.progress import Progress
from prorl_jax.training.state import create_train_state, make_optimizer

_log = logging.getLogger("prorl_jax.trainer")


def _dtype(name: str):
  return jnp.dtype(name) if name else None


class Trainer:
  """Builds everything a run needs from a validated config, restoring the latest checkpoint in `workdir`."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: str | os.PathLike, *,
               profile_steps: Sequence[int] = (), show_progress: bool = True):
    self.config = validate(config)
    c = self.config
    self.workdir = os.path.abspath(os.fspath(workdir))
    os.makedirs(self.workdir, exist_ok=True)
    self.profile_steps = tuple(profile_steps)
    self.show_progress = show_progress
    self.mesh = layout_lib.run_mesh(c)
    self.processes, self.process_index = jax.process_count(), jax.process_index()
    if self.processes > 1:
      multihost.check_run(c, self.mesh)
    # Model and tokenizer.
    self.model_config, params = models.load_hf(
        c.model.path, dtype=jnp.dtype(c.model.param_dtype), revision=c.model.revision or None,
        compute_dtype=c.model.compute_dtype, remat=c.model.remat, attention_impl=c.model.attention_impl)
    self.tokenizer = models.load_tokenizer(c.tokenizer.path or c.model.path, revision=c.model.revision or None,
                                           chat_template=c.tokenizer.chat_template or None)
    models.apply_chat_template(self.tokenizer, [{"role": "user", "content": "ping"}])  # fails early, clearly
    eos = set(self.model_config.eos_token_ids)
    if self.tokenizer.eos_token_id is not None:
      eos.add(int(self.tokenizer.eos_token_id))
    if not eos:
      raise TrainingError("neither the model config nor the tokenizer defines an EOS token; set eos_token_id")
    self.eos_ids = tuple(sorted(eos))
    self.pad_id = int(self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None
                      else self.eos_ids[0])
    self._drop_ids = set(self.eos_ids) | {self.pad_id}
    # Data.
    self.train_examples = load_spec(c.data.train, split=c.data.train_split, seed=c.seed,
                                              domains=c.data.domains, what="data.train")
    self.val_examples = (load_spec(c.data.validation, split=c.data.validation_split, seed=c.seed,
                                             domains=c.data.domains, limit=c.data.validation_size or None,
                                             what="data.validation") if c.data.validation else [])
    self.pipeline = PromptPipeline(self.train_examples, self.tokenizer, PipelineConfig(
        batch_size=c.batch.gen_prompts, seed=c.seed % 2**32, max_prompt_length=c.data.max_prompt_length,
        overlong=c.data.overlong_prompts, system_prompt=c.tokenizer.system_prompt or None))
    self.val_prompt_ids = [encode_prompt(self.tokenizer, e, system_prompt=c.tokenizer.system_prompt or None)
                           for e in self.val_examples]
    # Algorithm, optimizer, step functions, sampler.
    self.optimizer = make_optimizer(c.optimizer)
    state = create_train_state(params, self.optimizer, seed=c.seed, ref_dtype=_dtype(c.model.ref_param_dtype))
    del params
    layout = layout_lib.build_layout(c, self.model_config, state, self.optimizer, mesh=self.mesh, pad_id=self.pad_id,
                                     processes=self.processes)
    self.state_sharding, self.batch_sharding = layout.state_sharding, layout.batch_sharding
    self.loss_settings, self.step_fns, self.sampler = layout.loss_settings, layout.step_fns, layout.sampler
    self.state = state if self.state_sharding is None else jax.device_put(state, self.state_sharding)
    self.reset_policy = config_lib.reset_policy(c)
    self.exp_settings = experience.ExperienceSettings(
        n=c.rollout.n, prompts=c.batch.prompts // self.processes, max_new_tokens=c.rollout.max_new_tokens,
        prompt_len=c.data.max_prompt_length,
        sampling=rollout.SamplingParams(temperature=c.rollout.temperature, top_p=c.rollout.top_p,
                                        top_k=c.rollout.top_k),
        shaping=config_lib.length_shaping(c), dynamic_sampling=c.dynamic_sampling.enable,
        ds_rule=c.dynamic_sampling.rule, ds_metric=c.dynamic_sampling.metric,
        max_gen_batches=c.dynamic_sampling.max_gen_batches, eos_token_ids=self.eos_ids, pad_id=self.pad_id)
    domains = sorted({e.domain for e in self.train_examples + self.val_examples})
    self.rewards = RewardManager(c.rewards.num_workers or None, timeout_s=c.rewards.timeout_s,
                                 code_timeout_s=c.rewards.code_timeout_s, preload=domains)
    # The latest checkpoint, if any, replaces the fresh state.
    self.checkpointer = checkpointing.Checkpointer(os.path.join(self.workdir, "checkpoints"),
                                                   keep_latest=c.checkpoint.keep_latest,
                                                   keep_best=c.checkpoint.keep_best,
                                                   async_save=c.checkpoint.async_save)
    self.tracker = algorithms.ResetTrackerState()
    self.counters = {"ref_resets": 0, "nonfinite_skips": 0}
    self.start_step = 0
    latest = self.checkpointer.latest_step()
    if latest is not None:
      self._restore(latest)
    # Process 0 writes the run's files; other processes log their own view under process_<i>/.
    self.metrics = metrics_log.MetricsWriter(self._own_dir(), resume_step=latest)
    self.peak_flops, peak_source = mfu.peak_flops(self.mesh.devices.flat[0], c.model.compute_dtype)
    estimate = parallel.estimate_run(c, self.model_config, self.mesh if layout.sharded else None)
    estimate.update(mesh=parallel.describe(self.mesh), peak_flops_per_device=self.peak_flops,
                    peak_flops_source=peak_source)
    with open(os.path.join(self._own_dir(), "memory_estimate.json"), "w") as f:
      json.dump(estimate, f, indent=2, default=str)
    _log.info("mesh %s; estimated peak device memory %.2f GiB", estimate["mesh"], estimate["peak_gib"])
    with open(os.path.join(self._own_dir(), "config.json"), "w") as f:
      f.write(c.to_json_best_effort(indent=2))

  # --- checkpoints -------------------------------------------------------------------------------------------

  def _own_dir(self) -> str:
    return self.workdir if self.process_index == 0 else os.path.join(self.workdir, f"process_{self.process_index}")

  def _host_state(self) -> dict[str, Any]:
    host = {"tracker": self.tracker.to_dict(), "counters": dict(self.counters)}
    if self.processes > 1:  # every process's own data position (Orbax writes the JSON from process 0)
      return dict(host, data_by_process=multihost.gather_json(self.pipeline.get_state()))
    return dict(host, data=self.pipeline.get_state())

  def _restore(self, step: int) -> None:
    self.state, host = self.checkpointer.restore(step, self.state)
    if "data_by_process" in host:
      states = host["data_by_process"]
      if len(states) != self.processes:
        raise TrainingError(f"the checkpoint of step {step} holds data positions of {len(states)} processes; "
                            f"resume it with {len(states)} processes (this run has {self.processes})")
      self.pipeline.set_state(states[self.process_index])
    elif self.processes > 1:
      raise TrainingError(f"the checkpoint of step {step} is from a single-process run; resume it with one process")
    else:
      self.pipeline.set_state(host["data"])
    self.tracker = algorithms.ResetTrackerState.from_dict(host["tracker"])
    self.counters.update(host["counters"])
    self.start_step = step
    _log.info("resumed from the checkpoint of step %d in %s", step, self.checkpointer.directory)

  def _save(self, step: int, score: float | None) -> None:
    try:
      self.checkpointer.save(step, self.state, self._host_state(), score)
    except checkpointing.NonFiniteStateError as e:  # Never checkpoint a broken state; keep training visible.
      _log.error("%s", e)

  # --- phases --------------------------------------------------------------------------------------------------

  def _generate(self, step: int):
    params = multihost.local_replica(self.state.params, self.mesh)
    if self.config.model.rollout_param_dtype:
      params = jax.tree.map(lambda x: x.astype(self.config.model.rollout_param_dtype), params)
    key = jax.random.fold_in(jax.random.wrap_key_data(self.state.rng), step)
    if self.processes > 1:  # different prompts, different streams
      key = jax.random.fold_in(key, self.process_index)

    def generate(batch, index):
      return self.sampler.generate(params, list(batch.prompt_ids), max_new_tokens=self.config.rollout.max_new_tokens,
                                   sampling=self.exp_settings.sampling, num_samples=self.config.rollout.n,
                                   eos_token_ids=self.eos_ids, seed=jax.random.fold_in(key, index))
    return generate

  def _place(self, x, name: str):
    """A host array of per-row data on device (rows over the mesh's batch axes when sharded)."""
    if self.batch_sharding is None:
      return jnp.asarray(x)
    return jax.device_put(x, getattr(self.batch_sharding, name))

  def _device_batch(self, exp: experience.Experience) -> tuple[dict[str, jax.Array], dict[str, np.ndarray]]:
    """(device arrays of the training batch, host copies of its masks over all rows).

    With several processes each contributes its own rows (group ids offset to stay unique) to global arrays, and the
    masks are gathered so every process plans the same micro-batches.
    """
    a = exp.arrays
    if self.processes == 1:
      dev = {k: self._place(a[k], k) for k in ("input_ids", "attention_mask", "response_mask")}
      dev.update(rewards=jnp.asarray(a["rewards"]), group_ids=jnp.asarray(exp.group_ids))
      return dev, {"attention_mask": a["attention_mask"], "response_mask": a["response_mask"]}
    local = {k: a[k] for k in ("input_ids", "attention_mask", "response_mask", "rewards")}
    local["group_ids"] = exp.group_ids + self.process_index * self.exp_settings.prompts
    dev = parallel.global_batch(local, self.mesh)
    return dev, {k: multihost.global_numpy(dev[k]) for k in ("attention_mask", "response_mask", "rewards",
                                                             "group_ids")}

  def _plan(self, attention_mask, response_mask, micro_rows: int):
    """Length-bucketed micro-batches of these rows, or None (one padded call) when bucketing is off."""
    per_octave = self.config.batch.length_buckets_per_octave
    if not per_octave:
      return None
    return micro_batches.plan_micro_batches(attention_mask, response_mask, self.config.data.max_prompt_length,
                                            micro_rows, per_octave)

  def _score(self, domains, texts, truths):
    out = self.rewards.score_batch(domains, texts, truths)
    return out.scores, out.metrics()

  def _decode(self, tokens):
    return experience.decode_response(self.tokenizer, tokens, self._drop_ids)

  def train_step(self, step: int) -> dict[str, float]:
    """Runs RL step `step` (1-based) on `self.state` and returns its metrics."""
    c = self.config
    t0 = time.perf_counter()
    with jax.profiler.TraceAnnotation("rollout_and_reward"):
      failure = exp = None
      try:
        exp = experience.collect(step=step, next_prompts=lambda: next(self.pipeline),
                                 generate=self._generate(step), score=self._score, decode=self._decode,
                                 settings=self.exp_settings)
      except algorithms.DynamicSamplingError as e:
        failure = e
      if self.processes > 1:  # one process failing stops all of them together (the save below is collective)
        reasons = [r for r in multihost.gather_json(str(failure or "")) if r]
        if reasons and failure is None:
          failure = algorithms.DynamicSamplingError("; ".join(reasons))
      if failure is not None:
        if self.checkpointer.latest_step() != step - 1:
          self._save(step - 1, None)
        self.checkpointer.wait()
        raise TrainingError(f"step {step}: {failure} (state saved at step {step - 1}; rerun to resume)") from failure
    metrics = multihost.reduce_metrics(dict(exp.metrics))
    dev, host = self._device_batch(exp)
    ids, mask = dev["input_ids"], dev["attention_mask"]
    t1 = time.perf_counter()
    with jax.profiler.TraceAnnotation("logprob"):
      plan = self._plan(host["attention_mask"], host["response_mask"],
                        c.batch.logprob_micro_batch_size or c.batch.micro_batch_size)
      if plan is not None:
        metrics["batch/padding_frac"], metrics["batch/padding_frac_bucketed"] = micro_batches.padded_fraction(
            plan, host["attention_mask"])
      old_logp, entropy = self.step_fns.logprobs_entropy(self.state.params, ids, mask, plan)
      ref_logp = self.step_fns.logprobs(self.state.ref_params, ids, mask, plan)
      response_mask = dev["response_mask"]
      kl = algorithms.kl_penalty(old_logp, ref_logp, c.algorithm.kl_estimator,
                                 input_clamp=c.algorithm.kl_input_clamp or None,
                                 output_clamp=c.algorithm.kl_output_clamp or None)
      metrics["kl"] = float(algorithms.masked_mean(kl, response_mask))
      metrics["entropy"] = float(algorithms.masked_mean(entropy, response_mask))
      if self.processes == 1:
        advantages = algorithms.compute_advantages(
            c.algorithm.advantage, dev["rewards"], dev["group_ids"], response_mask,
            unbiased=c.algorithm.unbiased_whitening)
      else:  # groups are resolved on the host: compute on every process's full copy, then lay out by rows
        advantages = multihost.to_global(np.asarray(algorithms.compute_advantages(
            c.algorithm.advantage, host["rewards"], host["group_ids"], host["response_mask"],
            unbiased=c.algorithm.unbiased_whitening)), self.batch_sharding.advantages)
    t2 = time.perf_counter()
    batch = update.TrainBatch(input_ids=ids, attention_mask=mask, response_mask=response_mask,
                              advantages=advantages, old_logp=old_logp, ref_logp=ref_logp)
    rows_per_update = c.batch.mini_batch_prompts * c.rollout.n
    updates = []
    with jax.profiler.TraceAnnotation("update"):
      for _ in range(c.batch.ppo_epochs):
        for start in range(0, batch.num_rows, rows_per_update):
          rows = slice(start, start + rows_per_update)
          mb = jax.tree.map(lambda x: x[rows], batch)
          if self.batch_sharding is not None:
            mb = jax.device_put(mb, self.batch_sharding)
          plan = self._plan(host["attention_mask"][rows], host["response_mask"][rows], c.batch.micro_batch_size)
          self.state, m = self.step_fns.update(self.state, mb, plan)
          updates.append(m)
      updates = jax.device_get(updates)
    step_array = jnp.int32(step)
    if self.state_sharding is not None:
      step_array = multihost.place(step_array, self.state_sharding.step)
    self.state = self.state.replace(step=step_array)
    t3 = time.perf_counter()
    skipped = int(sum(int(m["nonfinite"]) for m in updates))
    self.counters["nonfinite_skips"] += skipped
    for key in ("loss", "pg_loss", "kl_loss", "grad_norm", "pg_clipfrac", "pg_clipfrac_lower", "ppo_kl",
                "clipfrac_high", "clipfrac_low"):
      metrics[key] = float(np.mean([m[key] for m in updates]))
    metrics["clip_frac"] = metrics["pg_clipfrac"]
    metrics["updates/skipped_nonfinite"] = skipped
    metrics["nonfinite_skips"] = self.counters["nonfinite_skips"]
    metrics["advantage/abs_mean"] = float(algorithms.masked_mean(jnp.abs(advantages), response_mask))
    metrics["length_penalty/active"] = float(algorithms.length_penalty_active(
        step, c.length_penalty.cosine_on_steps, c.length_penalty.cosine_off_steps,
        c.length_penalty.cosine_offset)) if c.length_penalty.cosine_enable else 0.0
    metrics["lr"] = float(c.optimizer.lr)
    metrics.update({"time/logprob_s": t2 - t1, "time/update_s": t3 - t2, "time/step_s": t3 - t0})
    train_tokens = float(np.sum(host["attention_mask"]))
    metrics["batch/rows"] = int(host["attention_mask"].shape[0])  # every process's rows in a multi-process run
    metrics["batch/tokens"] = train_tokens
    metrics["throughput/update_tokens_per_s"] = train_tokens * c.batch.ppo_epochs / max(t3 - t2, 1e-9)
    # MFU of the update phase (old/ref log-probs, forward + backward, AdamW) over the padded sequences.
    sequences_per_s = host["attention_mask"].shape[0] * c.batch.ppo_epochs / max(t3 - t1, 1e-9)
    metrics["throughput/update_mfu"] = mfu.mfu(sequences_per_s, self.model_config, c.data.max_prompt_length,
                                               c.rollout.max_new_tokens, self.peak_flops, self.mesh.size)
    return metrics

  def evaluate(self) -> dict[str, float]:
    """Validation: pass@1 (mean score over k samples) and pass@k per domain, with the current params."""
    if not self.val_examples:
      return {}
    problems = evaluation.problems_from_examples(self.val_examples, [e.domain for e in self.val_examples])
    start = time.perf_counter()
    with jax.profiler.TraceAnnotation("evaluation"):
      results = evaluation.evaluate_problems(
          sampler=self.sampler, params=multihost.local_replica(self.state.params, self.mesh),
          prompt_ids=self.val_prompt_ids, problems=problems,
          score_batch=lambda d, t, g: self.rewards.score_batch(d, t, g).scores, decode=self._decode,
          eos_token_ids=self.eos_ids, settings=evaluation.eval_settings(self.config),
          # Each process samples every P-th problem; samples follow problem indices, so the split changes nothing.
          skip=[i for i in range(len(problems)) if i % self.processes != self.process_index])
      if self.processes > 1:
        gathered = multihost.gather_json([r.to_json() for r in results])
        results = sorted((evaluation.ProblemResult.from_json(r) for part in gathered for r in part),
                         key=lambda r: r.index)
    out = {"time/eval_s": time.perf_counter() - start}
    for name, s in evaluation.summarize(results, by="domain").items():
      prefix = "eval/" if name == "all" else f"eval/{name}/"
      out.update({prefix + k: v for k, v in s.items()
                  if k.startswith(("pass@", "solved@")) or k in ("mean_length", "truncated_frac")})
    return multihost.from_first_process(out)  # same results everywhere; only the eval time differs

  def _maybe_reset(self, step: int, metrics: dict[str, float]) -> None:
    reset, reasons, self.tracker = algorithms.reset_decision(
        self.reset_policy, self.tracker, step=step, val_score=metrics.get("eval/pass@1"), kl=metrics.get("kl"))
    if not reset:
      return
    params = None
    if self.config.reference_reset.source == "best":
      best = self.checkpointer.best_step()
      if best is not None:
        self.checkpointer.wait()
        params = self.checkpointer.restore_params(best, self.state.params)
    self.state = algorithms.reset_reference(self.state, optimizer=self.optimizer, params=params,
                                            reset_optimizer=self.reset_policy.reset_optimizer,
                                            ref_dtype=_dtype(self.config.model.ref_param_dtype))
    if self.state_sharding is not None:
      self.state = multihost.place(self.state, self.state_sharding)
    self.counters["ref_resets"] += 1
    metrics["ref_reset/reasons"] = ",".join(reasons)
    _log.info("step %d: reference reset (%s)%s", step, ", ".join(reasons),
              " with optimizer re-initialised" if self.reset_policy.reset_optimizer else "")

  # --- the loop ------------------------------------------------------------------------------------------------

  def run(self) -> list[dict[str, Any]]:
    """Trains to `total_steps`; returns all metrics rows of the run (including earlier, resumed parts)."""
    c = self.config
    progress = Progress(self.start_step, c.total_steps, self.show_progress)
    try:
      if self.start_step == 0:
        metrics = self.evaluate() if c.eval.at_start else {}
        metrics["ref_resets"] = 0
        self.metrics.write(0, metrics)
        self._save(0, metrics.get("eval/pass@1"))
      for step in range(self.start_step + 1, c.total_steps + 1):
        with self._maybe_profile(step):
          metrics = self.train_step(step)
        last = step == c.total_steps
        if self.val_examples and ((c.eval_every and step % c.eval_every == 0) or last):
          metrics.update(self.evaluate())
        self._maybe_reset(step, metrics)
        metrics["ref_resets"] = self.counters["ref_resets"]
        self.metrics.write(step, metrics)
        progress.update(step, metrics)
        if (c.checkpoint_every and step % c.checkpoint_every == 0) or last or "eval/pass@1" in metrics:
          self._save(step, metrics.get("eval/pass@1"))
    finally:
      progress.close()
      self.checkpointer.wait()
      self.metrics.close()
    return self.finish()

  def finish(self) -> list[dict[str, Any]]:
    if self.processes > 1:
      params = multihost.local_replica(self.state.params, self.mesh)  # collective: every process takes part
      if self.process_index != 0:
        return metrics_log.read_metrics(self._own_dir())
    else:
      params = self.state.params
    rows = metrics_log.read_metrics(self.workdir)
    png = report.plot_training_curves(rows, os.path.join(self.workdir, "training_curves.png"),
                                      title=f"prorl_jax: {os.path.basename(self.workdir)}")
    text = report.summary_text(rows)
    with open(os.path.join(self.workdir, "summary.txt"), "w") as f:
      f.write(text + "\n")
    if self.config.checkpoint.export_hf:
      models.save_hf(self.model_config, jax.device_get(params), os.path.join(self.workdir, "final_hf"),
                     tokenizer=self.tokenizer)
    print(f"\n{text}\ncurves: {png}\nmetrics: {self.metrics.path}", file=sys.stderr)
    return rows

  def close(self) -> None:
    self.checkpointer.close()
    self.rewards.close()

  @contextlib.contextmanager
  def _maybe_profile(self, step: int):
    if self.profile_steps and step == self.profile_steps[0]:
      # No Python function tracing: it records every call (a million events in two tiny steps), the trace then
      # truncates and loses the phase annotations and device events that matter.
      options = jax.profiler.ProfileOptions()
      options.python_tracer_level = 0
      jax.profiler.start_trace(os.path.join(self.workdir, "profile"), profiler_options=options)
    try:
      yield
    finally:
      if self.profile_steps and step == self.profile_steps[-1]:
        jax.block_until_ready(self.state.params)
        jax.profiler.stop_trace()


def train(config: ml_collections.ConfigDict, workdir: str | os.PathLike, **kwargs: Any) -> list[dict[str, Any]]:
  """Builds a Trainer and runs it to the end; returns the metrics rows."""
  trainer = Trainer(config, workdir, **kwargs)
  try:
    return trainer.run()
  finally:
    trainer.close()
