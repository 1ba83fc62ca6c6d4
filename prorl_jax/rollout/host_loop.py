"""The host side of one generate call: which rows wait, which slot holds which row, when to prefill, insert, decode,
grow the cache's window and shrink the slots (the device programs are `prorl_jax.rollout.slots`)."""

from __future__ import annotations

import time
from typing import Sequence

import jax
import numpy as np

from prorl_jax.rollout import slots as slots_lib


class HostLoop:
  """One generate call's host loop: insert prefilled rows into free slots, decode, hand finished rows back, and
  once no row waits, move the last rows to fewer slots (continuous batching)."""

  def __init__(self, programs: slots_lib.SlotPrograms, params, prompts: Sequence[Sequence[int]], row_ids: np.ndarray,
               base_key: jax.Array, pad_id: int):
    self.programs, self.params, self.prompts, self.pad_id = programs, params, prompts, pad_id
    self.plan, self.n = programs.plan, programs.num_samples
    self.row_ids, self.base_key = row_ids, base_key
    total = len(prompts) * self.n
    self.results = slots_lib.Results.empty(total, programs.max_new_tokens, pad_id)
    self.row_of_slot = np.full(self.plan.slots, -1, np.int64)  # which row each slot holds (-1: none)
    self.free = np.ones(self.plan.slots, bool)  # done or empty: may be refilled
    self.next_prompt = 0
    # The prefilled group whose rows wait for slots: device arrays, its rows' ids, how many are inserted.
    self.pool, self.pool_rows, self.pool_next, self.pool_prompts = None, np.zeros(0, np.int64), 0, 0
    self.prefills = self.inserts = self.shrinks = self.steps = self.live_slot_steps = self.slot_steps = 0
    self.prefill_seconds = self.decode_seconds = 0.0

  def waiting(self) -> int:
    """Rows not yet in a slot: the rest of the prefilled group and the prompts not yet prefilled."""
    return len(self.pool_rows) - self.pool_next + (len(self.prompts) - self.next_prompt) * self.n

  def execute(self) -> slots_lib.Results:
    plan, programs = self.plan, self.programs
    weights = programs.prepare()(self.params)
    window, slots = plan.windows[0], plan.slots
    state = programs.empty(window)()
    self.state_steps = (0, 0)  # the state's own step counters when last read (a new state starts at 0)
    while True:
      if self.free.all() and (window, slots) != (plan.windows[0], plan.slots):
        # Every row finished: the next ones start on a short cache and all the slots.
        self._collect(state, window)
        window, slots = plan.windows[0], plan.slots
        self.row_of_slot, self.free = np.full(slots, -1, np.int64), np.ones(slots, bool)
        state, self.state_steps = programs.empty(window)(), (0, 0)
      state = self._refill(state, window)
      waiting = self.waiting()
      if self.free.all() and not waiting:
        break
      # Static batching decodes a chunk until all its rows are done; continuous until an insert's slots are free, or
      # once no row waits, until the live rows fit the next smaller slot count.
      target = slots
      if plan.continuous:
        smaller = [s for s in plan.slot_sizes() if s < slots]
        target = min(plan.refill_rows, waiting) if waiting else (slots - smaller[0] if smaller else slots)
      start = time.perf_counter()
      state = programs.segment(window, slots)(weights, state, np.int32(target))
      done, positions, steps, live_steps = jax.device_get(
          (state.done, state.positions, state.steps, state.live_slot_steps))
      self.decode_seconds += time.perf_counter() - start
      self.free = np.array(done)
      new_steps, new_live = int(steps) - self.state_steps[0], int(live_steps) - self.state_steps[1]
      self.state_steps = (int(steps), int(live_steps))
      self.steps, self.live_slot_steps = self.steps + new_steps, self.live_slot_steps + new_live
      self.slot_steps += new_steps * slots
      live = ~self.free
      if live.any() and positions[live].max() >= window:  # a live row reached the end of the cache's window
        bigger = plan.windows[plan.windows.index(window) + 1]
        state, window = programs.grow(window, bigger, slots)(state), bigger
      if plan.continuous and not waiting and live.any():
        state, slots = self._shrink(state, window, slots)
    self._collect(state, window)
    return self.results

  def _collect(self, state, window):
    """Hands every row the slots still hold back to the results."""
    held = self.programs.collect(window)(state, np.arange(len(self.row_of_slot), dtype=np.int32))
    self.results.store(self.row_of_slot, jax.device_get(held))

  def _shrink(self, state, window: int, slots: int):
    """Moves the live rows to the fewest slots (of the plan's sizes) that hold them, when that halves them or more."""
    live = ~self.free
    sizes = [s for s in self.plan.slot_sizes() if s < slots and s >= live.sum()]
    if not sizes:
      return state, slots
    to = sizes[-1]
    self._collect(state, window)  # finished rows leave with the slots they are in
    src = np.concatenate([np.flatnonzero(live), np.flatnonzero(~live)])[:to].astype(np.int32)
    state = self.programs.shrink(window, to)(state, src)
    self.row_of_slot = np.where(live[src], self.row_of_slot[src], -1)
    self.free = ~live[src]
    self.shrinks += 1
    return state, to

  def _refill(self, state, window):
    """Inserts waiting rows into free slots while enough are free: all slots at first (and for every static
    chunk), then `refill_rows` at a time, prefilling the next group of prompts when the current one is used up."""
    plan = self.plan
    while self.waiting():
      first_fill = not plan.continuous or self.inserts == 0
      need = plan.slots if not plan.continuous else (1 if first_fill else min(plan.refill_rows, self.waiting()))
      if self.free.sum() < need or (first_fill and not self.free.all()):
        break
      start = time.perf_counter()
      if self.pool_next >= len(self.pool_rows):
        self._prefill(plan.fill_prompts if first_fill else plan.refill_prompts)
      width = plan.slots if first_fill else plan.refill_rows  # the insert program's rows
      count = min(width, len(self.pool_rows) - self.pool_next, int(self.free.sum()))
      src = np.zeros(width, np.int32)
      src[:count] = np.arange(self.pool_next, self.pool_next + count)
      dst = np.full(width, plan.slots, np.int32)  # index S: the padding rows go nowhere
      dst[:count] = np.flatnonzero(self.free)[:count]
      previous = np.where(dst < plan.slots, self.row_of_slot[np.minimum(dst, plan.slots - 1)], -1)
      state, held = self.programs.refill(self.pool_prompts, width, window)(state, self.pool, src, dst)
      self.results.store(previous, jax.device_get(held))
      self.row_of_slot[dst[:count]] = self.pool_rows[self.pool_next:self.pool_next + count]
      self.free[dst[:count]] = False
      self.pool_next += count
      self.inserts += 1
      jax.block_until_ready(state.done)
      self.prefill_seconds += time.perf_counter() - start
    return state

  def _prefill(self, group: int) -> None:
    """Prefills the next `group` prompts (a short last group padded with dead prompts) as the pool of waiting rows."""
    first, count = self.next_prompt, min(group, len(self.prompts) - self.next_prompt)
    ids, lengths, live, keys = self._group_inputs(first, count, group)
    shardings = self.programs.input_shardings(group)
    inputs = [ids, lengths, live, keys] if shardings is None else [
        jax.device_put(x, s) for x, s in zip((ids, lengths, live, keys), shardings)]
    self.pool = self.programs.prefill(group)(self.params, *inputs)
    self.pool_rows = np.arange(first * self.n, (first + count) * self.n)
    self.pool_next, self.pool_prompts = 0, group
    self.next_prompt += count
    self.prefills += 1

  def _group_inputs(self, first: int, count: int, group: int):
    """Host arrays of a prefill group: right-padded ids, lengths, live flags, per-row keys (padding prompts dead)."""
    n, prompt_len = self.n, self.plan.prompt_len
    ids = np.full((group, prompt_len), self.pad_id, np.int32)
    lengths = np.ones((group,), np.int32)
    for i, p in enumerate(self.prompts[first:first + count]):
      ids[i, :len(p)] = p
      lengths[i] = len(p)
    live = np.arange(group) < count
    row_ids = np.zeros(group * n, np.uint32)  # padding rows' keys are never used
    row_ids[:count * n] = self.row_ids[first * n:(first + count) * n]
    keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(self.base_key, row_ids)
    return ids, lengths, live, keys
