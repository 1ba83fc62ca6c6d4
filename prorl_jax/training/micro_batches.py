"""Length-bucketed micro-batches: rows sorted by length, each micro-batch cut to the widths its rows need.

RL responses are ragged (ProRL's range from a few hundred to 16k tokens), and the training layout pads every row
to `prompt_len + response_len`. Grouping rows of similar length into a micro-batch and slicing away the columns
none of them uses removes most of that padding without changing the loss: the columns dropped are masked in every
row of the micro-batch, and the loss is normalised by counts of the whole mini-batch (ALGORITHMS.md §5).

Widths are rounded up to a few buckets per octave so the number of distinct shapes, each a compilation of the
micro-step, stays small over a long run (at most `per_octave` per doubling of length).
"""

from __future__ import annotations

import dataclasses

import numpy as np

MIN_WIDTH = 16


@dataclasses.dataclass(frozen=True)
class MicroBatch:
  """Rows of one micro-batch and the columns they keep.

  Attributes:
    rows: int32 `[m]` indices into the mini-batch.
    prompt_width: prompt columns kept (the last `prompt_width` of the left-padded prompt).
    response_width: response columns kept (the first `response_width` of the right-padded response).
  """

  rows: np.ndarray
  prompt_width: int
  response_width: int


def bucket_width(length: int, limit: int, per_octave: int) -> int:
  """The smallest bucket `>= length`, capped at `limit`.

  Buckets are `MIN_WIDTH`, then `per_octave` evenly spaced widths in every `(2^k, 2^(k+1)]`, e.g. with 4 per octave:
  16, 20, 24, 28, 32, 40, 48, 56, 64, 80, ... (at most 1 / per_octave of a row is padding).
  `per_octave = 0` means no bucketing: always `limit`.
  """
  if per_octave <= 0 or length >= limit:
    return limit
  if length <= MIN_WIDTH:
    return min(MIN_WIDTH, limit)
  octave = 1 << int(length - 1).bit_length() - 1  # length in (octave, 2 * octave]
  step = max(octave // per_octave, 1)
  return min(-(-length // step) * step, limit)


def equal_plan(rows: int, micro_rows: int, prompt_len: int, response_len: int) -> list[MicroBatch]:
  """`rows` rows in order, `micro_rows` at a time (0 = all in one), at full width: the plan without bucketing."""
  micro_rows = micro_rows or rows
  if rows % micro_rows:
    raise ValueError(f"mini-batch of {rows} sequences does not split into micro-batches of {micro_rows}")
  return [MicroBatch(np.arange(s, s + micro_rows, dtype=np.int32), prompt_len, response_len)
          for s in range(0, rows, micro_rows)]


def plan_micro_batches(attention_mask: np.ndarray, response_mask: np.ndarray, prompt_len: int, micro_rows: int,
                       per_octave: int) -> list[MicroBatch]:
  """Splits a mini-batch into micro-batches of `micro_rows` rows of similar length.

  Args:
    attention_mask: bool `[B, prompt_len + R]`, prompts left-padded to `prompt_len`, responses right-padded.
    response_mask: `[B, R]`, nonzero on response tokens.
    prompt_len: the padded prompt length P.
    micro_rows: rows per micro-batch (0 = all B rows in one); must divide B.
    per_octave: width buckets per doubling (`bucket_width`); 0 keeps rows in order at full width.

  Returns:
    Micro-batches covering every row once. With bucketing, rows are sorted by (response, prompt) length, so each
    micro-batch is cut to the bucket of its longest row.
  """
  attention_mask, response_mask = np.asarray(attention_mask), np.asarray(response_mask)
  rows, response_len = response_mask.shape
  micro_rows = micro_rows or rows
  if rows % micro_rows:
    raise ValueError(f"mini-batch of {rows} sequences does not split into micro-batches of {micro_rows}")
  if attention_mask.shape != (rows, prompt_len + response_len):
    raise ValueError(f"attention_mask {attention_mask.shape} does not match response_mask {response_mask.shape} "
                     f"with prompt_len={prompt_len}")
  if per_octave <= 0:
    return equal_plan(rows, micro_rows, prompt_len, response_len)
  # Widths from the outermost column each row uses (not counts), so a row with holes in its mask still fits.
  prompt_used = attention_mask[:, :prompt_len].astype(bool)
  prompt_lens = np.where(prompt_used.any(axis=1), prompt_len - np.argmax(prompt_used, axis=1), 0)
  used = response_mask != 0
  response_lens = np.where(used.any(axis=1), response_len - np.argmax(used[:, ::-1], axis=1), 0)
  order = np.lexsort((prompt_lens, response_lens)).astype(np.int32)
  plan = []
  for start in range(0, rows, micro_rows):
    idx = order[start:start + micro_rows]
    plan.append(MicroBatch(np.sort(idx), bucket_width(int(prompt_lens[idx].max()), prompt_len, per_octave),
                           bucket_width(int(response_lens[idx].max()), response_len, per_octave)))
  return plan


def padded_fraction(plan: list[MicroBatch], attention_mask: np.ndarray) -> tuple[float, float]:
  """(fraction of the full `[B, P + R]` layout that is padding, fraction of the planned micro-batches that is)."""
  real = float(np.sum(attention_mask))
  full = float(np.prod(np.shape(attention_mask)))
  planned = float(sum(len(mb.rows) * (mb.prompt_width + mb.response_width) for mb in plan))
  return 1.0 - real / full, 1.0 - real / planned
