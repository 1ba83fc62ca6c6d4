"""The jitted device work of a training step: response log-probs, and one optimizer update on a mini-batch with
gradient accumulation over micro-batches.

Sequences are laid out as verl does: prompt left-padded to `prompt_len`, response right-padded to `response_len`,
so every response starts at column `prompt_len` and its log-probs come from one static slice of hidden states.
Losses are normalised by the token (or sequence) count of the whole mini-batch, passed into every micro-batch,
so the accumulated gradient equals the full mini-batch gradient (ALGORITHMS.md §5, §16.10).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from prorl_jax import algorithms, models, parallel
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

  @property
  def num_rows(self) -> int:
    return self.input_ids.shape[0]


@dataclasses.dataclass(frozen=True)
class LossSettings:
  """Static loss configuration (ALGORITHMS.md §5-§7)."""

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
  micro_batch_size: int = 0  # 0 = the whole mini-batch in one pass
  logprob_micro_batch_size: int = 0
  # seq-mean-token-sum-norm's divisor: the full response length, so trimmed micro-batches keep it (0 = their width).
  loss_horizon: int = 0

  @classmethod
  def from_config(cls, config, prompt_len: int) -> "LossSettings":
    a = config.algorithm
    return cls(prompt_len=prompt_len, temperature=float(config.rollout.temperature), clip_low=a.clip_low,
               clip_high=a.clip_high, clip_c=a.clip_c or None, agg_mode=a.loss_agg, kl_coef=a.kl_coef,
               kl_estimator=a.kl_estimator, kl_input_clamp=a.kl_input_clamp or None,
               kl_output_clamp=a.kl_output_clamp or None, entropy_coef=a.entropy_coef,
               chunk_size=a.logprob_chunk_size, micro_batch_size=config.batch.micro_batch_size,
               logprob_micro_batch_size=config.batch.logprob_micro_batch_size or config.batch.micro_batch_size)


def response_logprobs(model_config: models.Qwen2Config, params: Any, input_ids: jax.Array, attention_mask: jax.Array,
                      settings: LossSettings, *, with_entropy: bool = False):
  """Temperature-scaled log-probs `[B, R]` of the response tokens (and their entropy), never materialising more
  than one chunk of `[tokens, vocab]` logits."""
  hidden = models.hidden_states(model_config, params, input_ids, attention_mask)
  p = settings.prompt_len
  head = models.head_weight(model_config, params).astype(model_config.compute_dtype)
  # The LM-head loop chunks flattened tokens, which GSPMD cannot split by rows: run it per row shard.
  fn = lambda h, t, w: algorithms.token_logprobs_from_hidden(h, w, t, settings.temperature,
                                                            chunk_size=settings.chunk_size,
                                                            return_entropy=with_entropy)
  return parallel.map_row_shards(fn, (hidden[:, p - 1:-1], input_ids[:, p:]), (head,))


def _split(tree: Any, parts: int) -> Any:
  return jax.tree.map(lambda x: x.reshape(parts, x.shape[0] // parts, *x.shape[1:]), tree)


def _merge(tree: Any) -> Any:
  return jax.tree.map(lambda x: x.reshape(x.shape[0] * x.shape[1], *x.shape[2:]), tree)


def batched_logprobs(model_config: models.Qwen2Config, settings: LossSettings, params: Any, input_ids: jax.Array,
                     attention_mask: jax.Array, *, with_entropy: bool):
  """`response_logprobs` over `logprob_micro_batch_size` rows at a time (bounded activation memory)."""
  rows = input_ids.shape[0]
  size = settings.logprob_micro_batch_size or rows
  if rows % size:
    raise ValueError(f"{rows} sequences do not split into log-prob micro-batches of {size}")
  fn = lambda xs: response_logprobs(model_config, params, xs[0], xs[1], settings, with_entropy=with_entropy)
  if size == rows:
    return fn((input_ids, attention_mask))
  return _merge(jax.lax.map(fn, _split((input_ids, attention_mask), rows // size)))


def _micro_loss(params, micro: TrainBatch, num_tokens, num_seqs, model_config, settings: LossSettings):
  want_entropy = settings.entropy_coef != 0.0
  out = response_logprobs(model_config, params, micro.input_ids, micro.attention_mask, settings,
                          with_entropy=want_entropy)
  logp, entropy = out if want_entropy else (out, None)
  mask = micro.response_mask
  horizon = settings.loss_horizon or None
  agg = lambda v: algorithms.agg_loss(v, mask, settings.agg_mode, global_num_tokens=num_tokens,
                                      global_num_seqs=num_seqs, loss_scale_factor=horizon)
  pg_loss, pg_metrics = algorithms.policy_loss(
      logp, micro.old_logp, micro.advantages, mask, clip_low=settings.clip_low, clip_high=settings.clip_high,
      clip_c=settings.clip_c, agg_mode=settings.agg_mode, global_num_tokens=num_tokens, global_num_seqs=num_seqs,
      loss_scale_factor=horizon)
  kl = algorithms.kl_penalty(logp, micro.ref_logp, settings.kl_estimator, input_clamp=settings.kl_input_clamp,
                             output_clamp=settings.kl_output_clamp)
  kl_loss = agg(kl)
  loss = pg_loss + settings.kl_coef * kl_loss
  if want_entropy:
    loss = loss - settings.entropy_coef * agg(entropy)
  # Micro-batch means re-weighted by this micro-batch's share of the mini-batch's tokens.
  share = jnp.sum(mask) / jnp.maximum(num_tokens, 1.0)
  aux = {"loss": loss, "pg_loss": pg_loss, "kl_loss": kl_loss}
  for name in ("pg_clipfrac", "pg_clipfrac_lower", "ppo_kl", "clipfrac_high", "clipfrac_low"):
    aux[name] = pg_metrics[name] * share
  return loss, aux


def minibatch_update(model_config: models.Qwen2Config, settings: LossSettings,
                     optimizer: optax.GradientTransformation, state: TrainState,
                     batch: TrainBatch) -> tuple[TrainState, dict[str, jax.Array]]:
  """One optimizer update on a mini-batch, accumulating gradients over `micro_batch_size` rows at a time.

  A non-finite loss or gradient norm skips the update (params and optimizer state unchanged) and reports
  `nonfinite = 1`.
  """
  rows = batch.num_rows
  micro = settings.micro_batch_size or rows
  if rows % micro:
    raise ValueError(f"mini-batch of {rows} sequences does not split into micro-batches of {micro}")
  num_tokens, num_seqs = algorithms.global_counts(batch.response_mask)
  grad_fn = jax.value_and_grad(_micro_loss, has_aux=True)

  def accumulate(carry, mb):
    (_, aux), grads = grad_fn(state.params, mb, num_tokens, num_seqs, model_config, settings)
    return jax.tree.map(jnp.add, carry, (grads, aux)), None

  zero_grads = jax.tree.map(jnp.zeros_like, state.params)
  zero_aux = _zero_aux()
  if micro == rows:
    (grads, aux), _ = accumulate((zero_grads, zero_aux), batch)
  else:
    (grads, aux), _ = jax.lax.scan(accumulate, (zero_grads, zero_aux), _split(batch, rows // micro))
  return apply_gradients(optimizer, state, grads, aux)


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


def _zero_aux() -> dict[str, jax.Array]:
  return {k: jnp.zeros((), jnp.float32) for k in AUX_METRICS}


AUX_METRICS = ("loss", "pg_loss", "kl_loss", "pg_clipfrac", "pg_clipfrac_lower", "ppo_kl", "clipfrac_high",
               "clipfrac_low")


def take_micro_batch(batch: TrainBatch, rows: jax.Array, prompt_len: int, prompt_width: int,
                     response_width: int) -> TrainBatch:
  """Rows `rows` `[m]` of `batch`, keeping the last `prompt_width` prompt columns and the first `response_width`
  response columns (`prorl_jax.training.micro_batches`)."""
  seq = slice(prompt_len - prompt_width, prompt_len + response_width)
  return TrainBatch(input_ids=_take(batch.input_ids, rows, seq), attention_mask=_take(batch.attention_mask, rows, seq),
                    **{k: _take(getattr(batch, k), rows, slice(response_width))
                       for k in ("response_mask", "advantages", "old_logp", "ref_logp")})


def _take(x: jax.Array, rows: jax.Array, columns: slice) -> jax.Array:
  return jnp.take(x, rows, axis=0)[:, columns]


def accumulate_micro_batch(model_config: models.Qwen2Config, settings: LossSettings, params: Any, acc: Any,
                           batch: TrainBatch, rows: jax.Array, num_tokens: jax.Array, num_seqs: jax.Array, *,
                           prompt_width: int, response_width: int) -> Any:
  """`acc + (gradients, loss metrics)` of one trimmed micro-batch (`take_micro_batch`), normalised by the whole
  mini-batch's `num_tokens` / `num_seqs` so the sum over micro-batches is the mini-batch gradient."""
  micro = take_micro_batch(batch, rows, settings.prompt_len, prompt_width, response_width)
  micro_settings = dataclasses.replace(settings, prompt_len=prompt_width,
                                       loss_horizon=settings.loss_horizon or batch.response_mask.shape[1])
  (_, aux), grads = jax.value_and_grad(_micro_loss, has_aux=True)(params, micro, num_tokens, num_seqs,
                                                                   model_config, micro_settings)
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
  """The jitted step functions of one run (built once: jit caches by function identity). Calls run under the
  run's mesh, which the activation constraints and per-shard log-prob loop read.

  `logprobs*` and `update` take an optional micro-batch plan (`micro_batches.plan_micro_batches`): with one, each
  micro-batch runs at its own trimmed width (one compilation per width bucket) and gradients accumulate across
  calls; without, the whole padded mini-batch runs in one call (`jit_*`, a scan over equal micro-batches).
  """

  mesh: Any
  prompt_len: int
  jit_logprobs: Callable[..., Any]  # the jitted functions themselves (e.g. for `.lower(...)`)
  jit_logprobs_entropy: Callable[..., Any]
  jit_update: Callable[..., Any]
  jit_micro_logprobs: Callable[..., Any]
  jit_micro_accumulate: Callable[..., Any]
  jit_zeros_like_grads: Callable[..., Any]
  jit_apply_gradients: Callable[..., Any]
  place_rows: Callable[[Any], Any]  # [B, ...] host array -> device array laid out like batch rows

  def _under_mesh(self, fn, *args, **kwargs):
    if self.mesh is None:
      return fn(*args, **kwargs)
    with jax.set_mesh(self.mesh):
      return fn(*args, **kwargs)

  def _planned_logprobs(self, params, input_ids, attention_mask, plan, with_entropy):
    zeros = np.zeros((attention_mask.shape[0], attention_mask.shape[1] - self.prompt_len), np.float32)
    out = (self.place_rows(zeros), self.place_rows(zeros)) if with_entropy else self.place_rows(zeros)
    for mb in plan:
      out = self._under_mesh(self.jit_micro_logprobs, params, out, input_ids, attention_mask, mb.rows,
                             prompt_width=mb.prompt_width, response_width=mb.response_width,
                             with_entropy=with_entropy)
    return out

  def logprobs(self, params, input_ids, attention_mask, plan=None):
    """logp `[B, R]` of the response tokens (0 past each micro-batch's trimmed width when planned)."""
    if plan is not None:
      return self._planned_logprobs(params, input_ids, attention_mask, plan, False)
    return self._under_mesh(self.jit_logprobs, params, input_ids, attention_mask)

  def logprobs_entropy(self, params, input_ids, attention_mask, plan=None):
    """(logp, entropy), both `[B, R]`."""
    if plan is not None:
      return self._planned_logprobs(params, input_ids, attention_mask, plan, True)
    return self._under_mesh(self.jit_logprobs_entropy, params, input_ids, attention_mask)

  def update(self, state, batch, plan=None):
    """(state, metrics) after one optimizer update on `batch`; the state is donated."""
    if plan is None:
      return self._under_mesh(self.jit_update, state, batch)
    num_tokens, num_seqs = algorithms.global_counts(batch.response_mask)
    acc = self._under_mesh(self.jit_zeros_like_grads, state.params)
    for mb in plan:
      acc = self._under_mesh(self.jit_micro_accumulate, state.params, acc, batch, mb.rows, num_tokens, num_seqs,
                             prompt_width=mb.prompt_width, response_width=mb.response_width)
    return self._under_mesh(self.jit_apply_gradients, state, *acc)


def build_step_functions(model_config: models.Qwen2Config, settings: LossSettings,
                         optimizer: optax.GradientTransformation, *, mesh: Any = None, state_sharding: Any = None,
                         batch_sharding: Any = None) -> StepFunctions:
  """Jits the step functions; with a mesh and shardings (`prorl_jax.parallel`) inputs and outputs are placed by
  them (params, reference and optimizer state by the parameter rules, batch rows over the batch axes)."""
  lp = lambda params, ids, mask: batched_logprobs(model_config, settings, params, ids, mask, with_entropy=False)
  lpe = lambda params, ids, mask: batched_logprobs(model_config, settings, params, ids, mask, with_entropy=True)
  upd = lambda state, batch: minibatch_update(model_config, settings, optimizer, state, batch)
  micro_lp = functools.partial(micro_batch_logprobs, model_config, settings)
  micro_acc = functools.partial(accumulate_micro_batch, model_config, settings)
  zeros = lambda params: (jax.tree.map(jnp.zeros_like, params), _zero_aux())
  apply = functools.partial(apply_gradients, optimizer)
  widths = ("prompt_width", "response_width")
  if state_sharding is None:
    return StepFunctions(
        mesh, settings.prompt_len, jax.jit(lp), jax.jit(lpe), jax.jit(upd, donate_argnums=0),
        jit_micro_logprobs=jax.jit(micro_lp, static_argnames=widths + ("with_entropy",), donate_argnums=1),
        jit_micro_accumulate=jax.jit(micro_acc, static_argnames=widths, donate_argnums=1),
        jit_zeros_like_grads=jax.jit(zeros), jit_apply_gradients=jax.jit(apply, donate_argnums=0),
        place_rows=jnp.asarray)
  rows = batch_sharding.old_logp
  grads = (state_sharding.params, None)
  return StepFunctions(
      mesh, settings.prompt_len,
      jax.jit(lp, in_shardings=(state_sharding.params, batch_sharding.input_ids, batch_sharding.attention_mask),
              out_shardings=rows),
      jax.jit(lpe, in_shardings=(state_sharding.params, batch_sharding.input_ids, batch_sharding.attention_mask),
              out_shardings=(rows, rows)),
      jax.jit(upd, in_shardings=(state_sharding, batch_sharding), out_shardings=(state_sharding, None),
              donate_argnums=0),
      # Micro-batch functions follow their (already placed) inputs; accumulators keep the parameter layout.
      jit_micro_logprobs=jax.jit(micro_lp, static_argnames=widths + ("with_entropy",), donate_argnums=1),
      jit_micro_accumulate=jax.jit(micro_acc, static_argnames=widths, out_shardings=grads, donate_argnums=1),
      jit_zeros_like_grads=jax.jit(zeros, out_shardings=grads),
      jit_apply_gradients=jax.jit(apply, in_shardings=(state_sharding,) + grads, out_shardings=(state_sharding, None),
                                  donate_argnums=0),
      place_rows=lambda x: jax.device_put(x, rows))
