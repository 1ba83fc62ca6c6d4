"""The jitted device work of a training step: response log-probs, and one optimizer update on a mini-batch by
gradient accumulation over micro-batches.

Sequences are laid out as verl does: prompt left-padded to `prompt_len`, response right-padded to `response_len`,
so every response starts at column `prompt_len` and its log-probs come from one static slice of hidden states.

There is one engine: a mini-batch is a plan of micro-batches (`micro_batches.plan_micro_batches`: length-bucketed
and trimmed, or equal full-width ones when bucketing is off). Log-probs fill their rows one micro-batch at a time;
an update is one jitted micro-step per micro-batch (gradients added to an accumulator) and one jitted apply, as
`optax.MultiSteps` accumulates. Every micro-batch's loss is divided by counts of the whole mini-batch
(`Normalizer`, the one place this is decided), so the accumulated gradient equals the mini-batch gradient
(ALGORITHMS.md §5, §16.10). Every call runs under the run's mesh; a one-device run is a mesh of one device.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding

from prorl_jax import algorithms, models, parallel
from prorl_jax.errors import ConfigError
from prorl_jax.training import config as config_lib
from prorl_jax.training.micro_batches import MicroBatch, equal_plan
from prorl_jax.training.state import TrainState


@flax.struct.dataclass
class TrainBatch:
  """B sequences of length prompt_len + response_len (R)."""

  input_ids: jax.Array  # int32 [B, P + R]
  attention_mask: jax.Array  # bool [B, P + R]
  response_mask: jax.Array  # float32 [B, R]
  advantages: jax.Array  # float32 [B, R]
  old_logp: jax.Array  # float32 [B, R]
  ref_logp: jax.Array  # float32 [B, R]
  rollout_logp: jax.Array | None = None  # float32 [B, R], the sampler's; only with rollout correction on

  @property
  def num_rows(self) -> int:
    return self.input_ids.shape[0]


@dataclasses.dataclass(frozen=True)
class LossSettings:
  """Static loss configuration (ALGORITHMS.md §5-§7); checks its own values against the algorithm core's lists."""

  prompt_len: int
  temperature: float = 1.0
  clip_low: float = 0.2
  clip_high: float = 0.28
  clip_c: float | None = None
  agg_mode: str = "token-mean"
  kl_coef: float = 0.0
  kl_estimator: str = "k2"
  kl_input_clamp: float | None = None
  kl_output_clamp: float | None = None
  entropy_coef: float = 0.0
  chunk_size: int = 1024
  policy_loss: str = "vanilla"  # algorithms.POLICY_LOSSES
  objective: tuple[tuple[str, float], ...] = ()  # the loss's own parameters (tau_pos, kl_cov_ratio, ...)
  rollout_level: str = ""  # rollout correction: "" (off), "token" or "sequence"
  rollout_threshold: float | tuple[float, float] = (0.5, 5.0)

  def __post_init__(self):
    if self.policy_loss not in algorithms.POLICY_LOSSES:
      raise ConfigError(f"algorithm.policy_loss is {self.policy_loss!r}; choose one of {algorithms.POLICY_LOSSES}")
    if self.rollout_level not in ("",) + algorithms.ROLLOUT_CORRECTION_LEVELS:
      raise ConfigError(f"algorithm.rollout_correction.level is {self.rollout_level!r}; choose '' or one of "
                        f"{algorithms.ROLLOUT_CORRECTION_LEVELS}")
    if self.agg_mode not in algorithms.AGG_MODES:
      raise ConfigError(f"algorithm.loss_agg is {self.agg_mode!r}; choose one of {algorithms.AGG_MODES}")
    if self.kl_estimator.rstrip("+") not in algorithms.KL_NAMES:
      raise ConfigError(f"algorithm.kl_estimator is {self.kl_estimator!r}; choose one of "
                        f"{algorithms.KL_NAMES} (optionally with '+')")
    if not (0 < self.clip_low < 1) or self.clip_high <= 0:
      raise ConfigError(f"algorithm.clip_low/clip_high must satisfy 0 < clip_low < 1 and clip_high > 0, got "
                        f"{self.clip_low}, {self.clip_high}")
    if self.clip_c is not None and self.clip_c <= 1:
      raise ConfigError(f"algorithm.clip_c must be > 1 (or 0 to disable dual clipping), got {self.clip_c}")
    if self.temperature <= 0:
      raise ConfigError(f"rollout.temperature must be > 0 for RL sampling, got {self.temperature}")
    if self.prompt_len < 1 or self.chunk_size < 1:
      raise ConfigError(f"prompt_len ({self.prompt_len}) and algorithm.logprob_chunk_size ({self.chunk_size}) must "
                        "be positive")

  @classmethod
  def from_config(cls, config, prompt_len: int) -> "LossSettings":
    a = config.algorithm
    return cls(prompt_len=prompt_len, temperature=float(config.rollout.temperature), clip_low=a.clip_low,
               clip_high=a.clip_high, clip_c=a.clip_c or None, agg_mode=a.loss_agg, kl_coef=a.kl_coef,
               kl_estimator=a.kl_estimator, kl_input_clamp=a.kl_input_clamp or None,
               kl_output_clamp=a.kl_output_clamp or None, entropy_coef=a.entropy_coef,
               chunk_size=a.logprob_chunk_size, policy_loss=a.policy_loss,
               objective=tuple((k, float(a[k])) for k in OBJECTIVE_FIELDS.get(a.policy_loss, ())),
               rollout_level=a.rollout_correction.level, rollout_threshold=config_lib.rollout_threshold(config))


# The config fields each policy objective takes besides the clip range (`algorithm.*`).
OBJECTIVE_FIELDS = {"sapo": ("tau_pos", "tau_neg"), "kl_cov": ("kl_cov_ratio", "ppo_kl_coef"),
                    "clip_cov": ("clip_cov_ratio", "clip_cov_lb", "clip_cov_ub")}


def policy_objective(logp: jax.Array, micro: TrainBatch, settings: LossSettings, counts: dict[str, Any],
                     is_weights: jax.Array | None, key: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
  """`settings.policy_loss` of one micro-batch: (loss, metrics), the loss aggregated over `counts` (the mini-batch's
  normalisers). `key` draws Clip-Cov's tokens."""
  name, mask, extra = settings.policy_loss, micro.response_mask, dict(settings.objective)
  args = (logp, micro.old_logp, micro.advantages, mask)
  clip = dict(clip_low=settings.clip_low, clip_high=settings.clip_high)
  if name == "vanilla":
    return algorithms.policy_loss(*args, clip_c=settings.clip_c, agg_mode=settings.agg_mode, is_weights=is_weights,
                                  **clip, **counts)
  if name == "sapo":
    return algorithms.sapo_loss(*args, is_weights=is_weights, **extra, **counts)
  if name == "kl_cov":
    return algorithms.kl_cov_loss(*args, agg_mode=settings.agg_mode, is_weights=is_weights, **extra, **counts)
  if name == "clip_cov":
    return algorithms.clip_cov_loss(*args, key=key, agg_mode=settings.agg_mode, is_weights=is_weights, **clip,
                                    **extra, **counts)
  fn = {"gspo": algorithms.gspo_loss, "cispo": algorithms.cispo_loss, "gmpo": algorithms.gmpo_loss}[name]
  return fn(*args, agg_mode=settings.agg_mode, is_weights=is_weights, **clip, **counts)


@flax.struct.dataclass
class Normalizer:
  """What every micro-batch's loss is divided by: counts of the whole mini-batch, never of the micro-batch.

  num_tokens, num_seqs: valid response tokens and non-empty sequences of the mini-batch (`algorithms.global_counts`).
  horizon: the full response length R, seq-mean-token-sum-norm's divisor (a trimmed micro-batch keeps it).
  """

  num_tokens: jax.Array
  num_seqs: jax.Array
  horizon: int = flax.struct.field(pytree_node=False)

  @classmethod
  def of(cls, response_mask: jax.Array) -> "Normalizer":
    num_tokens, num_seqs = algorithms.global_counts(response_mask)
    return cls(num_tokens, num_seqs, int(response_mask.shape[1]))


def response_logprobs(model_config: models.Qwen2Config, params: Any, input_ids: jax.Array, attention_mask: jax.Array,
                      settings: LossSettings, *, with_entropy: bool = False):
  """Temperature-scaled log-probs `[B, R]` of the response tokens (and their entropy), never materialising more
  than one chunk of `[tokens, vocab]` logits."""
  hidden = models.hidden_states(model_config, params, input_ids, attention_mask, layout=parallel.TRAIN_LAYOUT)
  p = settings.prompt_len
  head = models.head_weight(model_config, params).astype(model_config.compute_dtype)
  # The LM-head loop chunks flattened tokens, which GSPMD cannot split by rows: run it per row shard.
  fn = lambda h, t, w: algorithms.token_logprobs_from_hidden(h, w, t, settings.temperature,
                                                            chunk_size=settings.chunk_size,
                                                            return_entropy=with_entropy)
  return parallel.map_row_shards(fn, (hidden[:, p - 1:-1], input_ids[:, p:]), (head,))


def rollout_metrics(settings: LossSettings, old_logp: jax.Array, rollout_logp: jax.Array,
                    mask: jax.Array) -> dict[str, float]:
  """How far the sampler's log-probs `[B, R]` are from the trainer's (`mismatch/*`, every step), and the correction
  weights' statistics (`rollout_correction/*`) when `settings` turn the correction on."""
  out = algorithms.rollout_mismatch_metrics(old_logp, rollout_logp, mask)
  if settings.rollout_level:
    _, stats = algorithms.rollout_correction_weights(old_logp, rollout_logp, mask, level=settings.rollout_level,
                                                     threshold=settings.rollout_threshold)
    out.update({f"rollout_correction/{k.removeprefix('rollout_is_')}": v for k, v in stats.items()})
  return {k: float(v) for k, v in jax.device_get(out).items()}


def micro_loss(params: Any, micro: TrainBatch, norm: Normalizer, model_config: models.Qwen2Config,
               settings: LossSettings, key: jax.Array,
               on_policy: jax.Array | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
  """(loss, metrics) of one micro-batch: the policy objective (`policy_objective`, weighted by the rollout
  correction when it is on) + kl_coef x KL to the reference - entropy_coef x entropy, each aggregated with
  `settings.agg_mode` over `norm`'s mini-batch counts. Metrics are this micro-batch's share of the mini-batch's
  means, so they sum to them over the plan.

  `on_policy` (bool scalar): the params are those that computed `micro.old_logp` (a step's first update), so the
  old log-probs are the current ones, detached, as verl's actor does: XLA rounds the same forward differently in
  the log-prob and the gradient programs (~1e-7 here), which would otherwise make the first ratio 1 only nearly.
  """
  want_entropy = settings.entropy_coef != 0.0
  out = response_logprobs(model_config, params, micro.input_ids, micro.attention_mask, settings,
                          with_entropy=want_entropy)
  logp, entropy = out if want_entropy else (out, None)
  if on_policy is not None:
    micro = micro.replace(old_logp=jnp.where(on_policy, jax.lax.stop_gradient(logp), micro.old_logp))
  mask = micro.response_mask
  counts = dict(global_num_tokens=norm.num_tokens, global_num_seqs=norm.num_seqs, loss_scale_factor=norm.horizon)
  agg = lambda v: algorithms.agg_loss(v, mask, settings.agg_mode, **counts)
  is_weights = None
  if settings.rollout_level:
    is_weights, _ = algorithms.rollout_correction_weights(micro.old_logp, micro.rollout_logp, mask,
                                                          level=settings.rollout_level,
                                                          threshold=settings.rollout_threshold)
  pg_loss, pg_metrics = policy_objective(logp, micro, settings, counts, is_weights, key)
  kl = algorithms.kl_penalty(logp, micro.ref_logp, settings.kl_estimator, input_clamp=settings.kl_input_clamp,
                             output_clamp=settings.kl_output_clamp)
  kl_loss = agg(kl)
  loss = pg_loss + settings.kl_coef * kl_loss
  if want_entropy:
    loss = loss - settings.entropy_coef * agg(entropy)
  share = jnp.sum(mask) / jnp.maximum(norm.num_tokens, 1.0)
  aux = {"loss": loss, "pg_loss": pg_loss, "kl_loss": kl_loss}
  for name in AUX_METRICS[3:]:
    aux[name] = pg_metrics.get(name, jnp.zeros((), jnp.float32)) * share
  return loss, aux


def apply_gradients(optimizer: optax.GradientTransformation, state: TrainState, grads: Any,
                    aux: dict[str, jax.Array]) -> tuple[TrainState, dict[str, jax.Array]]:
  """The optimizer update with a mini-batch's accumulated gradients; a non-finite loss or gradient norm skips it
  (params and optimizer state unchanged) and reports `nonfinite = 1`."""
  grad_norm = optax.global_norm(grads)
  finite = jnp.isfinite(aux["loss"]) & jnp.isfinite(grad_norm)

  def apply(operand):
    params, opt_state = operand
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  params, opt_state = jax.lax.cond(finite, apply, lambda operand: operand, (state.params, state.opt_state))
  metrics = dict(aux, grad_norm=grad_norm, nonfinite=(~finite).astype(jnp.int32))
  return state.replace(params=params, opt_state=opt_state), metrics


def zero_accumulator(params: Any) -> tuple[Any, dict[str, jax.Array]]:
  """(zero gradients like `params`, zero loss metrics): what `accumulate_micro_batch` adds to."""
  return jax.tree.map(jnp.zeros_like, params), {k: jnp.zeros((), jnp.float32) for k in AUX_METRICS}


AUX_METRICS = ("loss", "pg_loss", "kl_loss", "pg_clipfrac", "pg_clipfrac_lower", "ppo_kl", "clipfrac_high",
               "clipfrac_low", "cov_frac")


def take_micro_batch(batch: TrainBatch, rows: jax.Array, prompt_len: int, prompt_width: int,
                     response_width: int) -> TrainBatch:
  """Rows `rows` `[m]` of `batch`, keeping the last `prompt_width` prompt columns and the first `response_width`
  response columns (`prorl_jax.training.micro_batches`)."""
  seq = slice(prompt_len - prompt_width, prompt_len + response_width)
  per_token = ("response_mask", "advantages", "old_logp", "ref_logp", "rollout_logp")
  return TrainBatch(input_ids=_take(batch.input_ids, rows, seq), attention_mask=_take(batch.attention_mask, rows, seq),
                    **{k: _take(getattr(batch, k), rows, slice(response_width)) for k in per_token
                       if getattr(batch, k) is not None})


def _take(x: jax.Array, rows: jax.Array, columns: slice) -> jax.Array:
  return jnp.take(x, rows, axis=0)[:, columns]


def accumulate_micro_batch(model_config: models.Qwen2Config, settings: LossSettings, params: Any, acc: Any,
                           batch: TrainBatch, rows: jax.Array, norm: Normalizer, key: jax.Array | None = None,
                           on_policy: jax.Array | None = None, *, prompt_width: int, response_width: int) -> Any:
  """`acc + (gradients, loss metrics)` of one trimmed micro-batch (`take_micro_batch`) of the mini-batch `batch`,
  normalised by `norm` so the sum over the plan is the mini-batch gradient. `key`: the micro-batch's random draws
  (Clip-Cov), default a fixed key; `on_policy`: see `micro_loss`."""
  micro = take_micro_batch(batch, rows, settings.prompt_len, prompt_width, response_width)
  key = jax.random.key(0) if key is None else key
  (_, aux), grads = jax.value_and_grad(micro_loss, has_aux=True)(
      params, micro, norm, model_config, dataclasses.replace(settings, prompt_len=prompt_width), key, on_policy)
  return jax.tree.map(jnp.add, acc, (grads, aux))


def micro_batch_logprobs(model_config: models.Qwen2Config, settings: LossSettings, params: Any, out: Any,
                         input_ids: jax.Array, attention_mask: jax.Array, rows: jax.Array, *, prompt_width: int,
                         response_width: int, with_entropy: bool) -> Any:
  """`out` (`[B, R]` log-probs, or (log-probs, entropy)) with rows `rows` filled from one trimmed micro-batch;
  columns past `response_width` are left as they were."""
  seq = slice(settings.prompt_len - prompt_width, settings.prompt_len + response_width)
  got = response_logprobs(model_config, params, _take(input_ids, rows, seq), _take(attention_mask, rows, seq),
                          dataclasses.replace(settings, prompt_len=prompt_width), with_entropy=with_entropy)
  return jax.tree.map(lambda o, g: o.at[rows, :response_width].set(g), out, got)


@dataclasses.dataclass(frozen=True)
class StepFunctions:
  """The jitted step functions of one run (built once: jit caches by function identity), each called under the
  run's mesh, which the model's activation hints and the per-shard log-prob loop read.

  `logprobs*` and `update` take a micro-batch plan (`micro_batches.plan_micro_batches`): each micro-batch runs at
  its own width (one compilation per width bucket); gradients accumulate across calls, then one apply. Without a
  plan, all rows form one full-width micro-batch (`micro_batches.equal_plan`).
  """

  mesh: Mesh
  prompt_len: int
  jit_micro_logprobs: Callable[..., Any]  # the jitted functions themselves (e.g. for `.lower(...)`)
  jit_micro_accumulate: Callable[..., Any]
  jit_zero_accumulator: Callable[..., Any]
  jit_apply_gradients: Callable[..., Any]

  def _place_rows(self, x: Any) -> jax.Array:
    """A host array `[B, ...]` on device, rows over the mesh's batch axes."""
    return jax.device_put(x, NamedSharding(self.mesh, parallel.rows_spec(np.shape(x), self.mesh)))

  def _call(self, fn, *args, **kwargs):
    with jax.set_mesh(self.mesh):
      return fn(*args, **kwargs)

  def _full(self, attention_mask, plan: Sequence[MicroBatch] | None) -> Sequence[MicroBatch]:
    if plan is not None:
      return plan
    rows, width = attention_mask.shape
    return equal_plan(rows, rows, self.prompt_len, width - self.prompt_len)

  def _logprobs(self, params, input_ids, attention_mask, plan: Sequence[MicroBatch] | None, with_entropy: bool):
    plan = self._full(attention_mask, plan)
    zeros = np.zeros((attention_mask.shape[0], attention_mask.shape[1] - self.prompt_len), np.float32)
    out = (self._place_rows(zeros), self._place_rows(zeros)) if with_entropy else self._place_rows(zeros)
    for mb in plan:
      out = self._call(self.jit_micro_logprobs, params, out, input_ids, attention_mask, mb.rows,
                       prompt_width=mb.prompt_width, response_width=mb.response_width, with_entropy=with_entropy)
    return out

  def logprobs(self, params, input_ids, attention_mask, plan: Sequence[MicroBatch] | None = None):
    """logp `[B, R]` of the response tokens (0 past each micro-batch's trimmed width)."""
    return self._logprobs(params, input_ids, attention_mask, plan, False)

  def logprobs_entropy(self, params, input_ids, attention_mask, plan: Sequence[MicroBatch] | None = None):
    """(logp, entropy), both `[B, R]`."""
    return self._logprobs(params, input_ids, attention_mask, plan, True)

  def update(self, state, batch: TrainBatch, plan: Sequence[MicroBatch] | None = None, key: jax.Array | None = None,
             on_policy: bool = False):
    """(state, metrics) after one optimizer update on the mini-batch `batch`; the state is donated. `key` seeds
    the objective's random draws (Clip-Cov), one fold per micro-batch. `on_policy`: `state.params` computed
    `batch.old_logp` (a step's first update), so the objective takes the current log-probs, detached, for them and
    its first ratio is exactly 1."""
    plan = self._full(batch.attention_mask, plan)
    norm = Normalizer.of(batch.response_mask)
    acc = self._call(self.jit_zero_accumulator, state.params)
    flag = jnp.asarray(on_policy)
    for i, mb in enumerate(plan):
      micro_key = None if key is None else jax.random.fold_in(key, i)
      acc = self._call(self.jit_micro_accumulate, state.params, acc, batch, mb.rows, norm, micro_key, flag,
                       prompt_width=mb.prompt_width, response_width=mb.response_width)
    return self._call(self.jit_apply_gradients, state, *acc)


def build_step_functions(model_config: models.Qwen2Config, settings: LossSettings,
                         optimizer: optax.GradientTransformation, *, mesh: Mesh,
                         state_sharding: TrainState) -> StepFunctions:
  """Jits the step functions for `mesh` (`parallel.make_mesh`; one device is a mesh of one). `state_sharding`: the
  `TrainState` of NamedShardings (`parallel.train_state_shardings`); accumulators keep the parameters' layout,
  micro-batch functions follow their (already placed) inputs."""
  widths = ("prompt_width", "response_width")
  grads = (state_sharding.params, None)
  return StepFunctions(
      mesh, settings.prompt_len,
      jit_micro_logprobs=jax.jit(functools.partial(micro_batch_logprobs, model_config, settings),
                                 static_argnames=widths + ("with_entropy",), donate_argnums=1),
      jit_micro_accumulate=jax.jit(functools.partial(accumulate_micro_batch, model_config, settings),
                                   static_argnames=widths, out_shardings=grads, donate_argnums=1),
      jit_zero_accumulator=jax.jit(zero_accumulator, out_shardings=grads),
      jit_apply_gradients=jax.jit(functools.partial(apply_gradients, optimizer),
                                  in_shardings=(state_sharding,) + grads, out_shardings=(state_sharding, None),
                                  donate_argnums=0))
