"""The slot loop: a fixed set of decode slots that rows enter (prefill + insert) and leave (collect) as they finish.

Device state is one `SlotState` of S slots. Four jitted programs act on it, all with static shapes:

  refill(state, prefilled, src, dst)  writes R rows `src` [R] of a prefilled group (`prefill`: each prompt once,
                                 its cache repeated for its samples, their first tokens drawn) into slots `dst` [R]
                                 (index S = none) and returns what those slots held, so finished rows leave as new
                                 ones arrive; the state is donated.
  segment(weights, state, target)  decodes every live slot until at least `target` slots are free (finished or
                                 empty), every row is done, or a live row reaches the end of the cache's window.
  shrink(state, src)             the S' < S slots `src` as a state of S' slots: once no row waits, the last rows
                                 move to fewer slots as the others finish, so the tail decodes a small batch.
  collect(state, slots)          the rows held in `slots`.

Static batching is the same loop with one refill of S rows and a segment that runs until all are done; continuous
batching keeps a prefilled group on the device and inserts R < S of its rows whenever R slots are free, so the
device decodes a full batch until the queue drains, then halves the slots as they empty. Each row draws its t-th
token from `fold_in(row_key, t)` (its own token index), so its response does not depend on its slot or on what else
is in the batch. `SlotPrograms` jits the programs for one shape, under a mesh with explicit shardings (slots and
caches split over the batch axes).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from prorl_jax import models, parallel
from prorl_jax.rollout.decoders import cache_length
from prorl_jax.rollout.sampling import SamplingParams, select_tokens


@flax.struct.dataclass
class Prefilled:
  """Rows straight out of the prefill (P prompts x n samples), each with its first token, in the rows layout."""

  tokens: jax.Array  # int32 [B, N]
  logprobs: jax.Array  # float32 [B, N]
  positions: jax.Array  # int32 [B]
  done: jax.Array  # bool [B]
  eos_hit: jax.Array  # bool [B]
  num_generated: jax.Array  # int32 [B]
  cache: Any  # models.KVCache of the prompts' positions
  keys: jax.Array  # [B]


def kv_cache_shardings(config: models.Qwen2Config, rows: int, length: int, mesh) -> models.KVCache:
  """A `KVCache` of NamedShardings for `rows` rows of `length` positions (`parallel.kv_cache_spec`)."""
  s = jax.sharding.NamedSharding(mesh, parallel.kv_cache_spec(config, rows, length, mesh))
  return models.KVCache(keys=(s,) * config.num_hidden_layers, values=(s,) * config.num_hidden_layers)


def prefill(config, sampling: SamplingParams, params, prompt_ids: jax.Array, prompt_lengths: jax.Array,
            live: jax.Array, keys: jax.Array, *, eos_ids: tuple[int, ...], max_new_tokens: int, num_samples: int,
            pad_id: int, mesh=None) -> Prefilled:
  """Prefills P right-padded prompts `[P, T]` once and draws each of their P x n rows' first token.

  `live` bool `[P]` marks real prompts (padding prompts of a fixed-shape group start done); `keys` `[P x n]`. The
  cache holds the T prompt positions only; inserting a row pads it to the slots' cache.
  """
  def constrain(cache):
    if mesh is None:
      return cache
    return jax.lax.with_sharding_constraint(cache, kv_cache_shardings(config, cache.batch_size, cache.max_len, mesh))

  cache = constrain(models.init_cache(config, prompt_ids.shape[0], prompt_ids.shape[1]))
  logits, cache = models.prefill(config, params, prompt_ids, prompt_lengths, cache, layout=parallel.TRAIN_LAYOUT)
  if num_samples > 1:
    repeat = lambda x: jnp.repeat(x, num_samples, axis=0)
    logits, prompt_lengths, live = repeat(logits), repeat(prompt_lengths), repeat(live)
    cache = constrain(jax.tree.map(repeat, cache))
  b = logits.shape[0]
  first, first_lp = select_tokens(logits, row_keys(keys, jnp.zeros((b,), jnp.int32)), sampling)
  eos = is_eos(first, eos_ids) & live
  tokens = jnp.full((b, max_new_tokens), pad_id, jnp.int32).at[:, 0].set(jnp.where(live, first, pad_id))
  logprobs = jnp.zeros((b, max_new_tokens), jnp.float32).at[:, 0].set(jnp.where(live, first_lp, 0.0))
  return Prefilled(tokens=tokens, logprobs=logprobs, positions=prompt_lengths.astype(jnp.int32),
                   done=eos | ~live | (max_new_tokens <= 1), eos_hit=eos, num_generated=live.astype(jnp.int32),
                   cache=cache, keys=keys)


@flax.struct.dataclass
class SlotState:
  """S slots of at most N tokens each."""

  tokens: jax.Array  # int32 [S, N]: generated tokens, pad after each row's end.
  logprobs: jax.Array  # float32 [S, N]
  positions: jax.Array  # int32 [S]: position (= cache index) of each row's latest token.
  done: jax.Array  # bool [S]: finished, or no row (free).
  eos_hit: jax.Array  # bool [S]
  num_generated: jax.Array  # int32 [S]
  keys: jax.Array  # [S] per-row PRNG keys.
  cache: Any  # the decoder's cache of S rows
  steps: jax.Array  # int32: decode steps run (all segments)
  live_slot_steps: jax.Array  # int32: sum over steps of the live slots (occupancy = this / (steps * S))


def is_eos(tokens: jax.Array, eos_ids: tuple[int, ...]) -> jax.Array:
  if not eos_ids:
    return jnp.zeros(tokens.shape, bool)
  return jnp.any(tokens[:, None] == jnp.asarray(eos_ids, tokens.dtype)[None, :], axis=-1)


def row_keys(keys: jax.Array, token_index: jax.Array) -> jax.Array:
  """Each row's key for its `token_index`-th token: `fold_in(row_key, t)` `[B]`."""
  return jax.vmap(jax.random.fold_in)(keys, token_index.astype(jnp.uint32))


def empty_state(decoder, slots: int, max_new_tokens: int, window: int, pad_id: int) -> SlotState:
  """S free slots with a cache of `window` positions."""
  return SlotState(tokens=jnp.full((slots, max_new_tokens), pad_id, jnp.int32),
                   logprobs=jnp.zeros((slots, max_new_tokens), jnp.float32),
                   positions=jnp.zeros((slots,), jnp.int32), done=jnp.ones((slots,), bool),
                   eos_hit=jnp.zeros((slots,), bool), num_generated=jnp.zeros((slots,), jnp.int32),
                   keys=jax.random.split(jax.random.key(0), slots), cache=decoder.empty_cache(slots, window),
                   steps=jnp.int32(0), live_slot_steps=jnp.int32(0))


def refill(decoder, state: SlotState, new: Prefilled, src: jax.Array, dst: jax.Array) -> tuple[SlotState, tuple]:
  """Rows `src` `[R]` of `new` (a `Prefilled` group) into slots `dst` `[R]` (index S drops the row); returns the new
  state and (tokens, logprobs, num_generated, eos_hit) the slots held before."""
  old = collect(state, dst)
  new = jax.tree.map(lambda x: x[src], new)
  window = cache_length(state.cache)
  cache = decoder.cache_from_rows(new.cache, window)
  put = lambda a, b: a.at[dst].set(b.astype(a.dtype), mode="drop")
  state = state.replace(
      tokens=put(state.tokens, new.tokens), logprobs=put(state.logprobs, new.logprobs),
      positions=put(state.positions, new.positions), done=put(state.done, new.done),
      eos_hit=put(state.eos_hit, new.eos_hit), num_generated=put(state.num_generated, new.num_generated),
      keys=state.keys.at[dst].set(new.keys, mode="drop"), cache=jax.tree.map(put, state.cache, cache))
  return state, old


def shrink(state: SlotState, src: jax.Array) -> SlotState:
  """The slots `src` `[S']` of `state` as a state of S' slots (their rows, caches and keys; the counters kept)."""
  take = lambda x: x[src]
  return state.replace(tokens=take(state.tokens), logprobs=take(state.logprobs), positions=take(state.positions),
                       done=take(state.done), eos_hit=take(state.eos_hit), num_generated=take(state.num_generated),
                       keys=take(state.keys), cache=jax.tree.map(take, state.cache))


def collect(state: SlotState, slots: jax.Array) -> tuple:
  """(tokens, logprobs, num_generated, eos_hit) of `slots` `[G]` (out-of-range indices give slot S - 1's)."""
  take = lambda a: jnp.take(a, slots, axis=0, mode="clip")
  return take(state.tokens), take(state.logprobs), take(state.num_generated), take(state.eos_hit)


def segment(decoder, sampling: SamplingParams, weights: Any, state: SlotState, target: jax.Array, *,
            eos_ids: tuple[int, ...], pad_id: int) -> SlotState:
  """Decodes until `target` slots are done, every slot is done, or a live row's next write would leave the cache."""
  max_new_tokens = state.tokens.shape[1]
  window = cache_length(state.cache)
  slots = jnp.arange(state.tokens.shape[0])

  def cond(s: SlotState):
    live = ~s.done
    return (jnp.any(live) & (jnp.sum(s.done) < target)
            & (jnp.max(jnp.where(live, s.positions, -1)) < window))

  def body(s: SlotState):
    active = ~s.done
    last = s.tokens[slots, jnp.maximum(s.num_generated - 1, 0)]
    logits, cache = decoder.step(weights, last, s.positions, s.cache, active)
    tok, lp = decoder.select(logits, row_keys(s.keys, s.num_generated), sampling)
    tok = jnp.where(active, tok, pad_id)
    lp = jnp.where(active, lp, 0.0)
    eos = active & is_eos(tok, eos_ids)
    index = jnp.where(active, s.num_generated, max_new_tokens)  # finished rows write nothing
    generated = s.num_generated + active.astype(jnp.int32)
    return s.replace(
        tokens=s.tokens.at[slots, index].set(tok, mode="drop"),
        logprobs=s.logprobs.at[slots, index].set(lp, mode="drop"),
        positions=s.positions + active.astype(jnp.int32),
        done=s.done | eos | (generated >= max_new_tokens),
        eos_hit=s.eos_hit | eos, num_generated=generated, cache=cache, steps=s.steps + 1,
        live_slot_steps=s.live_slot_steps + jnp.sum(active).astype(jnp.int32))

  return jax.lax.while_loop(cond, body, state)


@dataclasses.dataclass
class Results:
  """Host-side outputs, filled row by row as slots hand their rows back."""

  tokens: np.ndarray
  logprobs: np.ndarray
  lengths: np.ndarray
  eos_hit: np.ndarray

  @classmethod
  def empty(cls, rows: int, max_new_tokens: int, pad_id: int) -> "Results":
    return cls(np.full((rows, max_new_tokens), pad_id, np.int32), np.zeros((rows, max_new_tokens), np.float32),
               np.zeros((rows,), np.int32), np.zeros((rows,), bool))

  def store(self, row_of_slot: np.ndarray, held: tuple) -> None:
    """Writes the rows `held` (what `collect` / `refill` returned for slots whose rows are `row_of_slot`, -1 none)."""
    tokens, logprobs, lengths, eos = (np.asarray(x) for x in held)
    keep = row_of_slot >= 0
    rows = row_of_slot[keep]
    self.tokens[rows], self.logprobs[rows] = tokens[keep], logprobs[keep]
    self.lengths[rows], self.eos_hit[rows] = lengths[keep], eos[keep]


@dataclasses.dataclass(frozen=True)
class SlotPlan:
  """The shapes of one generate call: S slots, prompts per prefill group, rows per insert, the prompts' padded
  length, the cache's windows (growing phases; the last is prompt_len + max_new_tokens) and the fewest slots the
  drain shrinks to."""

  slots: int
  fill_prompts: int  # prompts of the first fill (and of every static chunk): slots / num_samples
  refill_prompts: int  # prompts per prefill group after the first fill (continuous); fill_prompts for static
  refill_rows: int  # rows inserted at a time after the first fill (continuous); slots for static
  prompt_len: int
  windows: tuple[int, ...]
  continuous: bool
  min_slots: int  # the drain halves the slots down to this many (= slots: never)

  def slot_sizes(self) -> tuple[int, ...]:
    """S, S/2, ... down to `min_slots`: the slot counts the drain may run at."""
    sizes = [self.slots]
    while sizes[-1] % 2 == 0 and sizes[-1] // 2 >= self.min_slots and (sizes[-1] // 2) % self.min_slots == 0:
      sizes.append(sizes[-1] // 2)
    return tuple(sizes)


class SlotPrograms:
  """The jitted programs of one plan; with a mesh, inputs and outputs carry explicit shardings (slots, prompts and
  caches over the batch axes, params by the sampling rules, indices and counters replicated)."""

  def __init__(self, config, decoder, sampling: SamplingParams, *, eos_ids: tuple[int, ...], pad_id: int,
               max_new_tokens: int, num_samples: int, plan: SlotPlan, mesh=None, param_shardings: Any = None):
    self.config, self.decoder, self.sampling, self.plan, self.mesh = config, decoder, sampling, plan, mesh
    self.eos_ids, self.pad_id, self.max_new_tokens, self.num_samples = eos_ids, pad_id, max_new_tokens, num_samples
    self.param_shardings = param_shardings
    self._jitted: dict[Any, Any] = {}

  # --- shardings (None without a mesh) ----------------------------------------------------------------------------

  def _rows(self, *shape):
    return jax.sharding.NamedSharding(self.mesh, parallel.rows_spec(shape, self.mesh, "rollout rows"))

  def _replicated(self):
    return jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec())

  def _cache(self, rows: int, length: int):
    return kv_cache_shardings(self.config, rows, length, self.mesh)

  def state_shardings(self, window: int, slots: int | None = None) -> SlotState | None:
    if self.mesh is None:
      return None
    s, n = slots or self.plan.slots, self.max_new_tokens
    return SlotState(tokens=self._rows(s, n), logprobs=self._rows(s, n), positions=self._rows(s), done=self._rows(s),
                     eos_hit=self._rows(s), num_generated=self._rows(s), keys=self._rows(s),
                     cache=self._cache(s, window), steps=self._replicated(), live_slot_steps=self._replicated())

  def input_shardings(self, prompts: int) -> tuple | None:
    """Of (ids [P, T], lengths [P], live [P], keys [P x n]) of a prefill group."""
    if self.mesh is None:
      return None
    return (self._rows(prompts, self.plan.prompt_len), self._rows(prompts), self._rows(prompts),
            self._rows(prompts * self.num_samples))

  def _prefilled_shardings(self, prompts: int) -> Prefilled | None:
    if self.mesh is None:
      return None
    b, n = prompts * self.num_samples, self.max_new_tokens
    return Prefilled(tokens=self._rows(b, n), logprobs=self._rows(b, n), positions=self._rows(b), done=self._rows(b),
                     eos_hit=self._rows(b), num_generated=self._rows(b), cache=self._cache(b, self.plan.prompt_len),
                     keys=self._rows(b))

  def _jit(self, key, make):
    if key not in self._jitted:
      self._jitted[key] = make()
    return self._jitted[key]

  # --- programs ---------------------------------------------------------------------------------------------------

  def prepare(self):
    """params -> the decoder's weights for `segment` (laid out once per generate call)."""
    if self.mesh is None:
      return self._jit("prepare", lambda: jax.jit(self.decoder.prepare))
    return self._jit("prepare", lambda: jax.jit(self.decoder.prepare, in_shardings=(self.param_shardings,)))

  def empty(self, window: int):
    """() -> S free slots with a `window`-position cache."""
    make = lambda: jax.jit(lambda: empty_state(self.decoder, self.plan.slots, self.max_new_tokens, window,
                                               self.pad_id), out_shardings=self.state_shardings(window))
    return self._jit(("empty", window), make)

  def prefill(self, prompts: int):
    """(params, ids [P, T], lengths [P], live [P], keys [P x n]) -> `Prefilled` of P x n rows."""
    kw = dict(eos_ids=self.eos_ids, max_new_tokens=self.max_new_tokens, num_samples=self.num_samples,
              pad_id=self.pad_id, mesh=self.mesh)
    fn = lambda p, ids, lengths, live, keys: prefill(self.config, self.sampling, p, ids, lengths, live, keys, **kw)
    if self.mesh is None:
      return self._jit(("prefill", prompts), lambda: jax.jit(fn))
    return self._jit(("prefill", prompts), lambda: jax.jit(
        fn, in_shardings=(self.param_shardings,) + self.input_shardings(prompts),
        out_shardings=self._prefilled_shardings(prompts)))

  def refill(self, prompts: int, rows: int, window: int):
    """(state, prefilled group of P x n rows, src [R], dst [R]) -> (state, what the dst slots held); the state is
    donated."""
    fn = lambda state, new, src, dst: refill(self.decoder, state, new, src, dst)
    key = ("refill", prompts, rows, window)
    if self.mesh is None:
      return self._jit(key, lambda: jax.jit(fn, donate_argnums=0))
    st, n = self.state_shardings(window), self.max_new_tokens
    held = (self._rows(rows, n), self._rows(rows, n), self._rows(rows), self._rows(rows))
    rep = self._replicated()
    return self._jit(key, lambda: jax.jit(
        fn, in_shardings=(st, self._prefilled_shardings(prompts), rep, rep), out_shardings=(st, held),
        donate_argnums=0))

  def segment(self, window: int, slots: int | None = None):
    """(weights, state, target) -> state after decoding until `target` slots are free (see `segment`)."""
    fn = lambda weights, state, target: segment(self.decoder, self.sampling, weights, state, target,
                                                eos_ids=self.eos_ids, pad_id=self.pad_id)
    key = ("segment", window, slots or self.plan.slots)
    if self.mesh is None:
      return self._jit(key, lambda: jax.jit(fn, donate_argnums=1))
    # The weights keep the layout `prepare` gave them (committed arrays); the state keeps its slots' layout.
    return self._jit(key, lambda: jax.jit(fn, out_shardings=self.state_shardings(window, slots), donate_argnums=1))

  def shrink(self, window: int, slots: int):
    """(state, src [slots]) -> a state of those `slots` slots (see `shrink`)."""
    if self.mesh is None:
      return self._jit(("shrink", window, slots), lambda: jax.jit(shrink))
    return self._jit(("shrink", window, slots), lambda: jax.jit(
        shrink, out_shardings=self.state_shardings(window, slots)))

  def grow(self, window: int, to: int, slots: int | None = None):
    """state with a `window`-position cache -> the same with `to` positions."""
    fn = lambda state: state.replace(cache=self.decoder.grow(state.cache, to))  # a new, longer cache: no donation
    key = ("grow", window, to, slots or self.plan.slots)
    if self.mesh is None:
      return self._jit(key, lambda: jax.jit(fn))
    return self._jit(key, lambda: jax.jit(fn, out_shardings=self.state_shardings(to, slots)))

  def collect(self, window: int):
    """(state, slots [G]) -> (tokens, logprobs, num_generated, eos_hit) of those slots."""
    return self._jit(("collect", window), lambda: jax.jit(collect))
