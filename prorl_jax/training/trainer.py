"""The ProRLv2 training loop: the one place that knows the order of a step.

Each step: prompts -> n rollouts per prompt -> rewards (+ length shaping on its schedule) -> dynamic sampling with
batch refill -> old and reference log-probs (temperature-scaled) -> advantages -> mini-batch updates -> metrics;
then, on their schedules, validation, reference resets and checkpoints. Rerunning with the same workdir resumes
from the newest usable checkpoint; SIGTERM / SIGINT stop the run at a safe point after checkpointing the last
completed step (`preemption`).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from prorl_jax import algorithms, models
from prorl_jax.data import PipelineConfig, PromptPipeline, encode_prompt
from prorl_jax.rewards import RewardManager
from prorl_jax.data.specs import load_spec
from prorl_jax.training import (checkpointing, evaluate, experience, metrics_log, mfu, micro_batches, multihost,
                                preemption, report, resume, update)
from prorl_jax.training import layout as layout_lib
from prorl_jax.training import config as config_lib
from prorl_jax.training.config import validate
from prorl_jax.training.errors import TrainingError
from prorl_jax.training.progress import Progress, profile_steps
from prorl_jax.training.state import create_train_state, make_optimizer

_log = logging.getLogger("prorl_jax.trainer")
# What ranks checkpoints and drives validation-triggered resets: ProRL's validation number, the mean score.
VALIDATION_SCORE = "eval/score@1"


def _dtype(name: str):
  return jnp.dtype(name) if name else None


class Trainer:
  """Builds everything a run needs from a validated config, restoring the latest checkpoint in `workdir`."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: str | os.PathLike, *,
               profile_steps: Sequence[int] = (), show_progress: bool = True):
    self.config = validate(config)
    self.workdir = os.path.abspath(os.fspath(workdir))
    os.makedirs(self.workdir, exist_ok=True)
    self.profile_steps = tuple(profile_steps)
    self.show_progress = show_progress
    self.mesh = layout_lib.run_mesh(self.config)
    self.process_index = jax.process_index()
    if multihost.is_multiprocess():
      multihost.check_run(self.config, self.mesh)
    params = self._build_policy()
    self._build_data()
    self._build_state_and_layout(params)
    self._build_experience()
    self.restored_step = self._build_checkpointer()
    self.metrics = metrics_log.MetricsWriter(self._own_dir(), resume_step=self.restored_step)
    self._write_run_files()

  # --- builders ------------------------------------------------------------------------------------------------

  def _build_policy(self) -> models.Params:
    """The model, tokenizer and special ids; returns the loaded params."""
    c = self.config
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
    return params

  def _build_data(self) -> None:
    """Training and validation examples, the prompt pipeline and the encoded validation prompts."""
    c = self.config
    self.train_examples = load_spec(c.data.train, split=c.data.train_split, seed=c.seed, domains=c.data.domains,
                                    what="data.train")
    self.val_examples = (load_spec(c.data.validation, split=c.data.validation_split, seed=c.seed,
                                   domains=c.data.domains, limit=c.data.validation_size or None,
                                   what="data.validation") if c.data.validation else [])
    self.pipeline = PromptPipeline(self.train_examples, self.tokenizer, PipelineConfig(
        batch_size=c.batch.gen_prompts, seed=c.seed % 2**32, max_prompt_length=c.data.max_prompt_length,
        overlong=c.data.overlong_prompts, system_prompt=c.tokenizer.system_prompt or None))
    self.val_prompt_ids = [encode_prompt(self.tokenizer, e, system_prompt=c.tokenizer.system_prompt or None)
                           for e in self.val_examples]

  def _build_state_and_layout(self, params: models.Params) -> None:
    """The optimizer, the train state laid out on the mesh, the step functions and the sampler."""
    c = self.config
    self.optimizer = make_optimizer(c.optimizer)
    state = create_train_state(params, self.optimizer, seed=c.seed, ref_dtype=_dtype(c.model.ref_param_dtype))
    del params
    self.layout = layout_lib.build_layout(c, self.model_config, state, self.optimizer, mesh=self.mesh,
                                          pad_id=self.pad_id, processes=jax.process_count())
    self.state_sharding, self.batch_sharding = self.layout.state_sharding, self.layout.batch_sharding
    self.step_fns, self.sampler = self.layout.step_fns, self.layout.sampler
    self.state = jax.device_put(state, self.state_sharding)
    self._state_shapes = resume.state_shapes(self.state)

  def _build_experience(self) -> None:
    """What a step's rollouts need: their settings, the reward workers, the reset policy."""
    c = self.config
    self.reset_policy = config_lib.reset_policy(c)
    self.exp_settings = experience.ExperienceSettings.from_config(c, self.eos_ids, self.pad_id,
                                                                  processes=jax.process_count())
    domains = sorted({e.domain for e in self.train_examples + self.val_examples})
    self.rewards = RewardManager(c.rewards.num_workers or None, timeout_s=c.rewards.timeout_s,
                                 code_timeout_s=c.rewards.code_timeout_s, preload=domains)

  def _build_checkpointer(self) -> int | None:
    """The checkpointer; the newest usable checkpoint, if any, replaces the fresh state. Returns its step."""
    c = self.config
    self.checkpointer = checkpointing.Checkpointer(os.path.join(self.workdir, "checkpoints"),
                                                   keep_latest=c.checkpoint.keep_latest,
                                                   keep_best=c.checkpoint.keep_best,
                                                   async_save=c.checkpoint.async_save)
    self.tracker = algorithms.ResetTrackerState()
    self.counters = {"ref_resets": 0, "nonfinite_skips": 0}
    self.start_step = 0
    self._stop: preemption.StopSignals | None = None
    self._step_start_host: dict[str, Any] | None = None
    found = resume.restore_newest(self.checkpointer, self.state, self._state_shapes, tuple(self.counters))
    if found is None:
      return None
    self.state, self.tracker, self.start_step = found.state, found.tracker, found.step
    self.pipeline.set_state(found.data)
    self.counters.update(found.counters)
    _log.info("resumed from the checkpoint of step %d in %s", found.step, self.checkpointer.directory)
    return found.step

  def _write_run_files(self) -> None:
    self.peak_flops = report.write_run_files(self.config, self.model_config, self.mesh, self._own_dir())

  # --- checkpoints -------------------------------------------------------------------------------------------

  def _own_dir(self) -> str:
    return self.workdir if self.process_index == 0 else os.path.join(self.workdir, f"process_{self.process_index}")

  def _host_state(self) -> dict[str, Any]:
    return resume.host_state(step=jax.device_get(self.state.step), tracker=self.tracker, counters=self.counters,
                             shapes=self._state_shapes, data=self.pipeline.get_state())

  def _save(self, step: int, score: float | None, host: dict[str, Any] | None = None) -> None:
    """Checkpoints `self.state` as step `step` (once: a step saved before a kill is not written again)."""
    try:
      self.checkpointer.save(step, self.state, host or self._host_state(), score)
    except checkpointing.NonFiniteStateError as e:  # Never checkpoint a broken state; keep training visible.
      _log.error("%s", e)

  # --- stopping on a signal ------------------------------------------------------------------------------------

  def _stop_requested(self, collective: bool = True) -> bool:
    return self._stop is not None and self._stop.requested(collective)

  def _safe_point(self, collective: bool = True) -> None:
    """Abandons the current step here if a stop signal arrived; only before its first optimizer update."""
    if self._stop_requested(collective):
      raise preemption.StepAbandoned()

  def _stop_after(self, step: int, host: dict[str, Any]) -> None:
    """Checkpoints completed step `step` (with its host state `host`), waits for the write and stops."""
    self._save(step, None, host)
    self.checkpointer.wait()
    name = (self._stop.received if self._stop is not None else None) or "a signal on another process"
    raise preemption.Preempted(name, self.checkpointer.latest_step())  # older if step's state was not finite

  # --- phases --------------------------------------------------------------------------------------------------

  def _generate(self, step: int):
    params = multihost.local_replica(self.state.params, self.mesh)
    if self.config.model.rollout_param_dtype:
      params = jax.tree.map(lambda x: x.astype(self.config.model.rollout_param_dtype), params)
    key = multihost.process_key(jax.random.fold_in(jax.random.wrap_key_data(self.state.rng), step))

    def generate(batch, index):
      self._safe_point(collective=False)
      return self.sampler.generate(params, list(batch.prompt_ids), max_new_tokens=self.config.rollout.max_new_tokens,
                                   sampling=self.exp_settings.sampling, num_samples=self.config.rollout.n,
                                   eos_token_ids=self.eos_ids, seed=jax.random.fold_in(key, index))
    return generate

  def _plan(self, attention_mask, response_mask, micro_rows: int) -> list[micro_batches.MicroBatch]:
    """Micro-batches of these rows: length-bucketed, or equal and full-width when bucketing is off."""
    return micro_batches.plan_micro_batches(attention_mask, response_mask, self.config.data.max_prompt_length,
                                            micro_rows, self.config.batch.length_buckets_per_octave)

  def _score(self, domains, texts, truths):
    self._safe_point(collective=False)
    out = self.rewards.score_batch(domains, texts, truths)
    return out.scores, out.metrics()

  def _decode(self, tokens):
    return experience.decode_response(self.tokenizer, tokens, self._drop_ids)

  def train_step(self, step: int) -> dict[str, float]:
    """Runs RL step `step` (1-based) on `self.state` and returns its metrics. Raises StepAbandoned, with the state
    untouched, when a stop signal arrives before the update."""
    t0 = time.perf_counter()
    exp = self._collect(step)
    self._safe_point()
    metrics = multihost.reduce_metrics(dict(exp.metrics))
    t1 = time.perf_counter()
    batch, host = self._training_batch(exp, metrics)
    self._safe_point()
    t2 = time.perf_counter()
    updates = self._update(batch, host, step)
    self.state = self.state.replace(step=multihost.place(jnp.int32(step), self.state_sharding.step))
    t3 = time.perf_counter()
    metrics.update(self._update_metrics(updates, batch))
    metrics.update({"time/logprob_s": t2 - t1, "time/update_s": t3 - t2, "time/step_s": t3 - t0})
    metrics.update(self._throughput(host, t1, t2, t3))
    return metrics

  def _collect(self, step: int) -> experience.Experience:
    """Rollouts, rewards and dynamic sampling until the step's batch is full. When it cannot fill (any process),
    saves the last completed step and stops with a TrainingError."""
    with jax.profiler.TraceAnnotation("rollout_and_reward"):
      failure = exp = None
      try:
        exp = experience.collect(step=step, next_prompts=lambda: next(self.pipeline),
                                 generate=self._generate(step), score=self._score, decode=self._decode,
                                 settings=self.exp_settings)
      except algorithms.DynamicSamplingError as e:
        failure = e
      failure = multihost.agree_on_failure(failure, algorithms.DynamicSamplingError)
      if failure is not None:
        self._save(step - 1, None, self._step_start_host or self._host_state())
        self.checkpointer.wait()
        raise TrainingError(f"step {step}: {failure} (state saved at step {step - 1}; rerun to resume)") from failure
    return exp

  def _training_batch(self, exp: experience.Experience, metrics: dict[str, float]):
    """(the step's `TrainBatch` on device, host copies of its masks): old and reference log-probs, advantages.
    Adds the policy's KL to the reference and its entropy to `metrics`."""
    c, s = self.config, self.layout.loss_settings
    dev, host = multihost.device_batch(exp.arrays, exp.group_ids, self.exp_settings.prompts, self.batch_sharding,
                                       self.mesh)
    ids, mask, response_mask = dev["input_ids"], dev["attention_mask"], dev["response_mask"]
    with jax.profiler.TraceAnnotation("logprob"):
      plan = self._plan(host["attention_mask"], host["response_mask"], c.batch.logprob_micro_batch_size
                        or c.batch.micro_batch_size or c.batch.mini_batch_prompts * c.rollout.n)
      metrics["batch/padding_frac"], metrics["batch/padding_frac_bucketed"] = micro_batches.padded_fraction(
          plan, host["attention_mask"])
      old_logp, entropy = self.step_fns.logprobs_entropy(self.state.params, ids, mask, plan)
      ref_logp = self.step_fns.logprobs(self.state.ref_params, ids, mask, plan)
      kl = algorithms.kl_penalty(old_logp, ref_logp, s.kl_estimator, input_clamp=s.kl_input_clamp,
                                 output_clamp=s.kl_output_clamp)
      metrics["kl"] = float(algorithms.masked_mean(kl, response_mask))
      metrics["entropy"] = float(algorithms.masked_mean(entropy, response_mask))
      metrics.update(update.rollout_metrics(s, old_logp, dev["rollout_logp"], response_mask))
      # Groups are resolved on the host copy of every row, then the advantages are laid out by rows.
      advantages = multihost.to_global(np.asarray(algorithms.compute_advantages(
          c.algorithm.advantage, host["rewards"], host["group_ids"], host["response_mask"],
          unbiased=c.algorithm.unbiased_whitening)), self.batch_sharding.advantages)
    batch = update.TrainBatch(input_ids=ids, attention_mask=mask, response_mask=response_mask,
                              advantages=advantages, old_logp=old_logp, ref_logp=ref_logp,
                              rollout_logp=dev["rollout_logp"] if s.rollout_level else None)
    return batch, host

  def _update(self, batch: update.TrainBatch, host: dict[str, np.ndarray], step: int) -> list[dict[str, Any]]:
    """`ppo_epochs` passes of one optimizer update per mini-batch; their metrics on the host. The objective's
    random draws (Clip-Cov) follow the run's key, the step and the update."""
    c = self.config
    rows_per_update = c.batch.mini_batch_prompts * c.rollout.n
    updates = []
    with jax.profiler.TraceAnnotation("update"):
      for _ in range(c.batch.ppo_epochs):
        for start in range(0, batch.num_rows, rows_per_update):
          rows = slice(start, start + rows_per_update)
          mb = jax.device_put(jax.tree.map(lambda x: x[rows], batch), self.batch_sharding)
          plan = self._plan(host["attention_mask"][rows], host["response_mask"][rows], c.batch.micro_batch_size)
          key = jax.random.fold_in(jax.random.fold_in(jax.random.wrap_key_data(self.state.rng), step), len(updates))
          # The first update runs on the params that computed old_logp: on-policy by definition.
          self.state, m = self.step_fns.update(self.state, mb, plan, key, on_policy=not updates)
          updates.append(m)
      return jax.device_get(updates)

  def _update_metrics(self, updates: list[dict[str, Any]], batch: update.TrainBatch) -> dict[str, float]:
    skipped = int(sum(int(m["nonfinite"]) for m in updates))
    self.counters["nonfinite_skips"] += skipped
    metrics = {key: float(np.mean([m[key] for m in updates])) for key in update.AUX_METRICS + ("grad_norm",)}
    metrics["clip_frac"] = metrics["pg_clipfrac"]
    metrics["updates/skipped_nonfinite"] = skipped
    metrics["nonfinite_skips"] = self.counters["nonfinite_skips"]
    metrics["advantage/abs_mean"] = float(algorithms.masked_mean(jnp.abs(batch.advantages), batch.response_mask))
    metrics["lr"] = float(self.config.optimizer.lr)
    return metrics

  def _throughput(self, host: dict[str, np.ndarray], t1: float, t2: float, t3: float) -> dict[str, float]:
    c = self.config
    train_tokens = float(np.sum(host["attention_mask"]))
    rows = int(host["attention_mask"].shape[0])  # every process's rows in a multi-process run
    # MFU of the update phase (old/ref log-probs, forward + backward, AdamW) over the padded sequences.
    sequences_per_s = rows * c.batch.ppo_epochs / max(t3 - t1, 1e-9)
    return {"batch/rows": rows, "batch/tokens": train_tokens,
            "throughput/update_tokens_per_s": train_tokens * c.batch.ppo_epochs / max(t3 - t2, 1e-9),
            "throughput/update_mfu": mfu.mfu(sequences_per_s, self.model_config, c.data.max_prompt_length,
                                             c.rollout.max_new_tokens, self.peak_flops, self.mesh.size)}

  def evaluate(self) -> dict[str, float]:
    """Validation: score@1 (mean score over k samples) and pass@k per domain, with the current params."""
    if not self.val_examples:
      return {}
    with jax.profiler.TraceAnnotation("evaluation"):
      return evaluate.validate(
          self.config, self.sampler, multihost.local_replica(self.state.params, self.mesh), self.val_examples,
          self.val_prompt_ids, score_batch=lambda d, t, g: self.rewards.score_batch(d, t, g).scores,
          decode=self._decode, eos_token_ids=self.eos_ids)

  def _maybe_reset(self, step: int, metrics: dict[str, float]) -> None:
    reset, reasons, self.tracker = algorithms.reset_decision(
        self.reset_policy, self.tracker, step=step, val_score=metrics.get(VALIDATION_SCORE), kl=metrics.get("kl"))
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
      with preemption.StopSignals() as self._stop:
        self._run_steps(progress)
    finally:
      self._stop = None
      progress.close()
      try:
        self.checkpointer.wait()
      finally:
        self.metrics.close()
    return self.finish()

  def _run_steps(self, progress: Progress) -> None:
    c = self.config
    if self.restored_step is None:
      metrics = self.evaluate() if c.eval.at_start else {}
      metrics["ref_resets"] = 0
      self.metrics.write(0, metrics)
      self._save(0, metrics.get(VALIDATION_SCORE))
    for step in range(self.start_step + 1, c.total_steps + 1):
      # The host state (data position, reset tracker, counters) as the last completed step left it.
      self._step_start_host = self._host_state()
      if self._stop_requested():
        self._stop_after(step - 1, self._step_start_host)
      try:
        with profile_steps(os.path.join(self.workdir, "profile"), self.profile_steps, step,
                           lambda: self.state.params):
          metrics = self.train_step(step)
      except preemption.StepAbandoned:
        self._stop_after(step - 1, self._step_start_host)
      last = step == c.total_steps
      if self.val_examples and ((c.eval_every and step % c.eval_every == 0) or last):
        metrics.update(self.evaluate())
      self._maybe_reset(step, metrics)
      metrics["ref_resets"] = self.counters["ref_resets"]
      self.metrics.write(step, metrics)
      progress.update(step, metrics)
      if (c.checkpoint_every and step % c.checkpoint_every == 0) or last or VALIDATION_SCORE in metrics:
        self._save(step, metrics.get(VALIDATION_SCORE))
      self.checkpointer.check()  # a background save that failed (full disk) stops the run now

  def finish(self) -> list[dict[str, Any]]:
    params = multihost.local_replica(self.state.params, self.mesh)  # collective: every process takes part
    if self.process_index != 0:
      return metrics_log.read_metrics(self._own_dir())
    rows = metrics_log.read_metrics(self.workdir)
    text, png = report.write_run_report(self.workdir, rows)
    if self.config.checkpoint.export_hf:
      models.save_hf(self.model_config, jax.device_get(params), os.path.join(self.workdir, "final_hf"),
                     tokenizer=self.tokenizer)
    print(f"\n{text}\ncurves: {png}\nmetrics: {self.metrics.path}", file=sys.stderr)
    return rows

  def close(self) -> None:
    self.checkpointer.close()
    self.rewards.close()


def train(config: ml_collections.ConfigDict, workdir: str | os.PathLike, **kwargs: Any) -> list[dict[str, Any]]:
  """Builds a Trainer and runs it to the end; returns the metrics rows."""
  trainer = Trainer(config, workdir, **kwargs)
  try:
    return trainer.run()
  finally:
    trainer.close()
