"""Host-side experience collection for one RL step: prompts -> n rollouts each -> rewards -> length shaping ->
dynamic sampling (refilling from further generation batches) -> a fixed-shape training batch.

Arrays here are numpy; the device work (sampling, log-probs) is called through the sampler and step functions.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Sequence

import numpy as np

from prorl_jax import algorithms, rollout
from prorl_jax.data import PromptBatch
from prorl_jax.errors import ConfigError
from prorl_jax.rewards import SOLVED_THRESHOLD
from prorl_jax.training import config as config_lib


@dataclasses.dataclass(frozen=True)
class ExperienceSettings:
  """Static settings of experience collection (from the trainer config)."""

  n: int
  prompts: int  # prompts per training batch
  max_new_tokens: int
  prompt_len: int  # the fixed (padded) prompt length of training sequences
  sampling: rollout.SamplingParams
  shaping: algorithms.LengthShapingConfig
  dynamic_sampling: bool
  ds_rule: str
  ds_metric: str
  max_gen_batches: int
  eos_token_ids: tuple[int, ...]
  pad_id: int

  def __post_init__(self):
    if self.ds_rule not in algorithms.KEEP_RULES:
      raise ConfigError(f"dynamic_sampling.rule is {self.ds_rule!r}; choose one of {algorithms.KEEP_RULES}")
    if self.ds_metric not in algorithms.FILTER_METRICS:
      raise ConfigError(f"dynamic_sampling.metric is {self.ds_metric!r}; choose one of {algorithms.FILTER_METRICS}")

  @classmethod
  def from_config(cls, c: Any, eos_token_ids: Sequence[int], pad_id: int, processes: int = 1) -> "ExperienceSettings":
    """The settings of config `c` for one of `processes` processes (each collects its share of the prompts)."""
    return cls(n=c.rollout.n, prompts=c.batch.prompts // processes, max_new_tokens=c.rollout.max_new_tokens,
               prompt_len=c.data.max_prompt_length,
               sampling=rollout.SamplingParams(temperature=c.rollout.temperature, top_p=c.rollout.top_p,
                                               top_k=c.rollout.top_k),
               shaping=config_lib.length_shaping(c), dynamic_sampling=c.dynamic_sampling.enable,
               ds_rule=c.dynamic_sampling.rule, ds_metric=c.dynamic_sampling.metric,
               max_gen_batches=c.dynamic_sampling.max_gen_batches, eos_token_ids=tuple(eos_token_ids),
               pad_id=pad_id)


@dataclasses.dataclass
class Experience:
  """The training batch (exactly `prompts × n` rows, groups contiguous) and what was measured on the way."""

  arrays: dict[str, np.ndarray]  # input_ids [B, P+R], attention_mask, response_mask [B, R], rewards, scores, ...
  group_ids: np.ndarray  # int32 [B], 0..prompts-1
  metrics: dict[str, float]


def decode_response(tokenizer: Any, tokens: Sequence[int], drop_ids: set[int]) -> str:
  """Response text for the verifiers: EOS/pad ids removed, other special tokens (e.g. </think>) kept."""
  return tokenizer.decode([t for t in tokens if t not in drop_ids], skip_special_tokens=False)


def _per_sample_arrays(batch: PromptBatch, out: rollout.RolloutBatch, settings: ExperienceSettings,
                       scores: np.ndarray, rewards: np.ndarray) -> dict[str, np.ndarray]:
  n, p, r = settings.n, settings.prompt_len, settings.max_new_tokens
  rows = len(out.lengths)
  ids = np.full((rows, p + r), settings.pad_id, np.int32)
  mask = np.zeros((rows, p + r), bool)
  for row in range(rows):
    prompt = batch.prompt_ids[row // n]
    if len(prompt) > p:
      raise ValueError(f"prompt of {len(prompt)} tokens exceeds data.max_prompt_length={p}")
    ids[row, p - len(prompt):p] = prompt
    mask[row, p - len(prompt):p] = True
  response_mask = out.response_mask
  ids[:, p:] = np.where(response_mask, out.tokens, settings.pad_id)
  mask[:, p:] = response_mask
  return {"input_ids": ids, "attention_mask": mask, "response_mask": response_mask.astype(np.float32),
          "rewards": rewards.astype(np.float32), "scores": scores.astype(np.float32),
          "lengths": out.lengths.astype(np.int32), "finished": out.finished_by_eos,
          "rollout_logp": out.logprobs.astype(np.float32)}


def collect(*, step: int, next_prompts: Callable[[], PromptBatch],
            generate: Callable[[PromptBatch, int], rollout.RolloutBatch],
            score: Callable[[list[str], list[str], list[Any]], tuple[np.ndarray, dict[str, float]]],
            decode: Callable[[Sequence[int]], str], settings: ExperienceSettings) -> Experience:
  """Generates, scores and filters until a training batch of `settings.prompts` prompts is full.

  Args:
    step: the RL step (drives the length-penalty schedule).
    next_prompts: the next generation batch from the data pipeline.
    generate: `(prompt_batch, gen_batch_index) -> RolloutBatch` with `settings.n` samples per prompt.
    score: `(domains, responses, ground_truths) -> (scores [B], reward metrics)`.
    decode: response token ids -> text.
    settings: see `ExperienceSettings`.

  Raises:
    algorithms.DynamicSamplingError: `max_gen_batches` generation batches did not yield enough prompts with
      reward variance.
  """
  acc = algorithms.DynamicSamplingAccumulator(settings.prompts, settings.max_gen_batches if
                                              settings.dynamic_sampling else 0)
  seen = {"scores": [], "rewards": [], "lengths": [], "finished": []}
  by_domain: dict[str, list[float]] = {}
  reward_metrics: dict[str, float] = {}
  timings = {"rollout": 0.0, "reward": 0.0}
  generated_tokens = 0
  while not acc.ready:
    batch = next_prompts()
    start = time.perf_counter()
    out = generate(batch, acc.num_gen_batches)
    timings["rollout"] += time.perf_counter() - start
    generated_tokens += int(out.lengths.sum())
    start = time.perf_counter()
    texts = [decode(out.response(i)) for i in range(len(out.lengths))]
    examples = [batch.examples[i // settings.n] for i in range(len(out.lengths))]
    scores, rm = score([e.domain for e in examples], texts, [e.ground_truth for e in examples])
    timings["reward"] += time.perf_counter() - start
    for k, v in rm.items():
      reward_metrics[k] = reward_metrics.get(k, 0.0) + v
    correct = scores >= SOLVED_THRESHOLD
    rewards = np.asarray(algorithms.shape_rewards(scores, out.lengths, step, settings.shaping, correct=correct,
                                                  truncated=~out.finished_by_eos))
    group_ids = out.prompt_index
    if settings.dynamic_sampling:
      metric = scores if settings.ds_metric == "score" else rewards
      keep = np.asarray(algorithms.dynamic_sampling_keep(metric, group_ids, rule=settings.ds_rule))
    else:
      keep = np.ones(len(group_ids), bool)
    for name, values in (("scores", scores), ("rewards", rewards), ("lengths", out.lengths),
                         ("finished", out.finished_by_eos)):
      seen[name].append(np.asarray(values))
    for e, s in zip(examples, scores):
      by_domain.setdefault(e.domain, []).append(float(s))
    acc.add(_per_sample_arrays(batch, out, settings, scores, rewards), group_ids, keep)
  gen_batches, kept_frac = acc.num_gen_batches, acc.prompts_kept / max(acc.prompts_seen, 1)  # take() resets them
  arrays, group_ids = acc.take()
  metrics = _metrics(seen, arrays, by_domain, reward_metrics, timings, generated_tokens, step, settings)
  metrics.update({"dynamic_sampling/kept_frac": kept_frac, "dynamic_sampling/gen_batches": gen_batches})
  return Experience(arrays=arrays, group_ids=group_ids, metrics=metrics)


def _metrics(seen: dict[str, list[np.ndarray]], arrays: dict[str, np.ndarray], by_domain: dict[str, list[float]],
             reward_metrics: dict[str, float], timings: dict[str, float], generated_tokens: int, step: int,
             settings: ExperienceSettings) -> dict[str, float]:
  """What a step's rollouts measured: over every generated sample (`seen`), and over the kept batch (`arrays`)."""
  all_scores = np.concatenate(seen["scores"])
  lengths = np.concatenate(seen["lengths"])
  metrics = {
      "reward/mean": float(np.mean(np.concatenate(seen["rewards"]))),
      "score/mean": float(all_scores.mean()),
      "pass_rate": float(np.mean(all_scores >= SOLVED_THRESHOLD)),
      "response_length/mean": float(lengths.mean()),
      "response_length/max": float(lengths.max()),
      "response_length/truncated_frac": float(1.0 - np.concatenate(seen["finished"]).mean()),
      "train_batch/reward_mean": float(arrays["rewards"].mean()),
      "train_batch/score_mean": float(arrays["scores"].mean()),
      "rollout/generated_tokens": generated_tokens,
      "rollout/samples": int(lengths.size),  # every generated response, kept by dynamic sampling or not
      "time/rollout_s": timings["rollout"],
      "time/reward_s": timings["reward"],
      "throughput/tokens_per_s": generated_tokens / max(timings["rollout"], 1e-9),
  }
  sh = settings.shaping  # the schedule `shape_rewards` applied above
  metrics["length_penalty/active"] = float(algorithms.length_penalty_active(
      step, sh.cosine_on_steps, sh.cosine_off_steps, sh.cosine_offset)) if sh.cosine_max_len else 0.0
  for domain, values in sorted(by_domain.items()):
    metrics[f"score/{domain}/mean"] = float(np.mean(values))
  for key in ("reward/timeout", "reward/error"):
    if key in reward_metrics:
      metrics[key] = reward_metrics[key]
  return metrics
