"""The prompt pipeline: a Grain dataset of tokenised prompts with a small, checkpointable position.

Stages (grain): source -> seeded global shuffle (reseeded every epoch) -> this process's shard -> repeat
(forever for training, once for evaluation) -> chat formatting + tokenisation (map) -> over-long prompts dropped
(counted) -> batches of `batch_size / process_count` prompts. Every process shuffles with the same seed and takes
every `process_count`-th element, so the processes see disjoint prompts and, together, each prompt once per epoch.

`get_state()` returns a JSON-serialisable dict of a few integers (grain's next index plus our counters); after
`set_state(state)` a freshly built pipeline yields exactly the batches the saved one would have yielded next.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import grain
import numpy as np

from prorl_jax.data.formatting import DEFAULT_INSTRUCTIONS, check_chat_template, encode_prompt
from prorl_jax.data.schema import DataError, Example

_OVERLONG = ("filter", "truncate_left", "truncate_middle", "error")
_STATE_VERSION = 1


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
  """How prompts are drawn.

  Attributes:
    batch_size: prompts per step summed over all processes (ProRL: 256); each process gets
      `batch_size // process_count`.
    seed: shuffle seed (0 <= seed < 2**32); each epoch is reshuffled from it.
    shuffle: shuffle globally each epoch (off for evaluation).
    num_epochs: None repeats forever (training); 1 is a single pass (evaluation).
    drop_remainder: drop a final partial batch (only matters when num_epochs is finite).
    even_shards: cut each epoch to a multiple of process_count so every process gets the same number of prompts
      (the <= process_count-1 prompts left out differ from epoch to epoch). Turn off for evaluation.
    max_prompt_length: longest prompt in tokens (chat template included); None for no limit.
    overlong: what to do with longer prompts: "filter" (drop and count), "truncate_left" (keep the last tokens,
      which hold the question's end and the generation prompt), "truncate_middle" (keep both ends) or "error".
    system_prompt: system message added to prompts without one.
    instructions: per-domain instruction templates (see formatting.DEFAULT_INSTRUCTIONS); None for none.
    num_threads: grain threads that tokenise ahead of the consumer (0: tokenise on demand).
  """

  batch_size: int
  seed: int = 0
  shuffle: bool = True
  num_epochs: int | None = None
  drop_remainder: bool = True
  even_shards: bool = True
  max_prompt_length: int | None = None
  overlong: str = "filter"
  system_prompt: str | None = None
  instructions: Mapping[str, str] | None = dataclasses.field(default_factory=lambda: DEFAULT_INSTRUCTIONS)
  num_threads: int = 0

  def __post_init__(self):
    if not isinstance(self.batch_size, int) or self.batch_size < 1:
      raise ValueError(f"PipelineConfig.batch_size must be a positive int, got {self.batch_size!r}")
    if not 0 <= self.seed < 2**32:
      raise ValueError(f"PipelineConfig.seed must be in [0, 2**32), got {self.seed}")
    if self.num_epochs is not None and self.num_epochs < 1:
      raise ValueError(f"PipelineConfig.num_epochs must be None (forever) or >= 1, got {self.num_epochs}")
    if self.max_prompt_length is not None and self.max_prompt_length < 1:
      raise ValueError(f"PipelineConfig.max_prompt_length must be None or >= 1, got {self.max_prompt_length}")
    if self.overlong not in _OVERLONG:
      raise ValueError(f"PipelineConfig.overlong must be one of {_OVERLONG}, got {self.overlong!r}")
    if self.num_threads < 0:
      raise ValueError(f"PipelineConfig.num_threads must be >= 0, got {self.num_threads}")

  @classmethod
  def for_evaluation(cls, batch_size: int, **kwargs: Any) -> PipelineConfig:
    """A single ordered pass over every prompt, keeping the last partial batch and every shard element."""
    kwargs = {"shuffle": False, "num_epochs": 1, "drop_remainder": False, "even_shards": False, **kwargs}
    return cls(batch_size=batch_size, **kwargs)


@dataclasses.dataclass(frozen=True)
class PromptBatch:
  """One step's prompts on this process (`B = batch_size // process_count`, fewer in a final partial batch).

  Attributes:
    examples: the `B` examples (domain and ground truth for the rewards).
    prompt_ids: `B` int32 arrays `[prompt_len_i]`, unpadded.
    prompt_lengths: `[B]` int32.
    truncated: `[B]` bool, prompts cut to max_prompt_length.
    epochs: `[B]` int32, the epoch each prompt was drawn in.
    positions: `[B]` int64, index in this process's stream (before filtering).
  """

  examples: tuple[Example, ...]
  prompt_ids: tuple[np.ndarray, ...]
  prompt_lengths: np.ndarray
  truncated: np.ndarray
  epochs: np.ndarray
  positions: np.ndarray

  def __len__(self) -> int:
    return len(self.examples)

  def padded(self, pad_id: int, *, length: int | None = None, side: str = "left",
             multiple_of: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """`pad_prompts` on this batch: tokens `[B, L]` int32 and mask `[B, L]` bool."""
    return pad_prompts(self.prompt_ids, pad_id, length=length, side=side, multiple_of=multiple_of)


def pad_prompts(sequences: Sequence[Sequence[int]], pad_id: int, *, length: int | None = None, side: str = "left",
                multiple_of: int = 1) -> tuple[np.ndarray, np.ndarray]:
  """Pads token lists into tokens `[B, L]` int32 and a validity mask `[B, L]` bool.

  L is `length`, or the longest sequence rounded up to `multiple_of` (fewer distinct shapes -> fewer jit
  recompiles). Left padding puts every prompt's last token in column L-1, where generation starts.
  """
  if side not in ("left", "right"):
    raise ValueError(f"side must be 'left' or 'right', got {side!r}")
  longest = max((len(s) for s in sequences), default=0)
  if length is None:
    length = -(-max(longest, 1) // multiple_of) * multiple_of
  elif longest > length:
    raise ValueError(f"a prompt has {longest} tokens, more than length={length}; raise length or filter prompts")
  tokens = np.full((len(sequences), length), pad_id, dtype=np.int32)
  mask = np.zeros((len(sequences), length), dtype=bool)
  for i, s in enumerate(sequences):
    n = len(s)
    cols = slice(length - n, length) if side == "left" else slice(0, n)
    tokens[i, cols] = np.asarray(s, dtype=np.int32)
    mask[i, cols] = True
  return tokens, mask


class _DropOverlongIterator(grain.DatasetIterator):
  """Drops elements marked over-long, counting drops/truncations in the (checkpointed) state."""

  def __init__(self, parent: grain.DatasetIterator, epoch_length: int, max_len: int | None):
    super().__init__(parent)
    self._epoch_length, self._max_len = epoch_length, max_len
    self._counts = {"filtered": 0, "truncated": 0, "delivered": 0}
    # Consecutive drops. Any 2L-1 consecutive positions contain a whole epoch of length L, so a run that long
    # proves an epoch without a single usable prompt (a shorter run can straddle two epochs legitimately).
    self._run = 0

  def __next__(self) -> dict[str, Any]:
    while True:
      element = next(self._parent)
      if not element["overlong"]:
        break
      self._counts["filtered"] += 1
      self._run += 1
      if self._run >= 2 * self._epoch_length - 1:
        raise DataError("max_prompt_length", f"= {self._max_len} is shorter than every prompt of this shard",
                        "raise PipelineConfig.max_prompt_length or use overlong='truncate_left'")
    self._run = 0
    self._counts["truncated"] += int(element["truncated"])
    self._counts["delivered"] += 1
    return element

  def get_state(self) -> dict[str, Any]:
    return {"parent": self._parent.get_state(), "counts": dict(self._counts), "run": self._run}

  def set_state(self, state: dict[str, Any]) -> None:
    self._parent.set_state(state["parent"])
    self._counts, self._run = dict(state["counts"]), state["run"]

  @property
  def counts(self) -> dict[str, int]:
    return dict(self._counts)


class _DropOverlong(grain.IterDataset):

  def __init__(self, parent: grain.IterDataset, epoch_length: int, max_len: int | None):
    super().__init__(parent)
    self._epoch_length, self._max_len = epoch_length, max_len
    self.last_iterator: _DropOverlongIterator | None = None  # For PromptPipeline.stats.

  def __iter__(self) -> _DropOverlongIterator:
    self.last_iterator = _DropOverlongIterator(self._parent.__iter__(), self._epoch_length, self._max_len)
    return self.last_iterator


def _collate(elements: Sequence[dict[str, Any]]) -> PromptBatch:
  ids = tuple(e["ids"] for e in elements)
  return PromptBatch(examples=tuple(e["example"] for e in elements), prompt_ids=ids,
                     prompt_lengths=np.asarray([len(i) for i in ids], dtype=np.int32),
                     truncated=np.asarray([e["truncated"] for e in elements], dtype=bool),
                     epochs=np.asarray([e["epoch"] for e in elements], dtype=np.int32),
                     positions=np.asarray([e["position"] for e in elements], dtype=np.int64))


def _truncate(ids: list[int], max_len: int, mode: str) -> list[int]:
  if mode == "truncate_left":
    return ids[len(ids) - max_len:]
  head = max_len // 2
  return ids[:head] + ids[len(ids) - (max_len - head):]


class PromptPipeline:
  """Iterator of `PromptBatch`es over `examples` for this process; see the module docstring.

  Args:
    examples: the dataset (every process must pass the same list in the same order).
    tokenizer: a transformers tokenizer with a chat template.
    config: `PipelineConfig`.
    process_index, process_count: this process's shard; default `jax.process_index()` / `jax.process_count()`.
  """

  def __init__(self, examples: Sequence[Example], tokenizer: Any, config: PipelineConfig, *,
               process_index: int | None = None, process_count: int | None = None):
    if process_index is None or process_count is None:
      import jax  # pylint: disable=g-import-not-at-top
      process_index = jax.process_index() if process_index is None else process_index
      process_count = jax.process_count() if process_count is None else process_count
    if not 0 <= process_index < process_count:
      raise ValueError(f"process_index={process_index} must be in [0, process_count={process_count})")
    if config.batch_size % process_count:
      raise ValueError(f"PipelineConfig.batch_size={config.batch_size} is not divisible by process_count="
                       f"{process_count}; use a multiple of {process_count}")
    examples = list(examples)
    if not examples:
      raise ValueError("PromptPipeline got no examples")
    bad = next((i for i, e in enumerate(examples) if not isinstance(e, Example)), None)
    if bad is not None:
      raise TypeError(f"examples[{bad}] is a {type(examples[bad]).__name__}, not an Example; use load_examples()")
    check_chat_template(tokenizer)
    self.config, self.tokenizer = config, tokenizer
    self.process_index, self.process_count = process_index, process_count
    self.local_batch_size = config.batch_size // process_count
    n = len(examples)
    stop = n - n % process_count if config.even_shards else n
    self.shard_length = len(range(process_index, stop, process_count))
    if self.shard_length == 0:
      raise ValueError(f"{n} examples leave process {process_index} of {process_count} with none; use more "
                       "examples or even_shards=False")
    self._fingerprint = {
        "num_examples": n, "ids_sha1": hashlib.sha1("\0".join(e.id for e in examples).encode()).hexdigest(),
        "seed": config.seed, "shuffle": config.shuffle, "num_epochs": config.num_epochs,
        "batch_size": config.batch_size, "process_index": process_index, "process_count": process_count,
        "even_shards": config.even_shards, "max_prompt_length": config.max_prompt_length,
        "overlong": config.overlong}

    ds = grain.MapDataset.source(examples)
    if config.shuffle:
      ds = ds.shuffle(seed=config.seed)
    ds = ds[process_index:stop:process_count].repeat(config.num_epochs)
    ds = ds.map_with_index(self._tokenize)
    it = ds.to_iter_dataset(grain.ReadOptions(num_threads=config.num_threads,
                                              prefetch_buffer_size=max(2 * self.local_batch_size, 1)))
    drop = _DropOverlong(it, self.shard_length, config.max_prompt_length)
    self.dataset = drop.batch(self.local_batch_size, drop_remainder=config.drop_remainder, batch_fn=_collate)
    self._iterator = iter(self.dataset)
    self._drop_iterator = drop.last_iterator

  def _tokenize(self, position: int, example: Example) -> dict[str, Any]:
    ids = encode_prompt(self.tokenizer, example, system_prompt=self.config.system_prompt,
                        instructions=self.config.instructions)
    max_len, overlong, truncated = self.config.max_prompt_length, False, False
    if max_len is not None and len(ids) > max_len:
      if self.config.overlong == "error":
        raise DataError("prompt", f"has {len(ids)} tokens, more than max_prompt_length={max_len}",
                        "raise max_prompt_length or use overlong='filter'", f"example {example.id!r}")
      if self.config.overlong == "filter":
        overlong = True
      else:
        ids, truncated = _truncate(ids, max_len, self.config.overlong), True
    return {"example": example, "ids": np.asarray(ids, dtype=np.int32), "overlong": overlong,
            "truncated": truncated, "position": position, "epoch": position // self.shard_length}

  def __iter__(self) -> PromptPipeline:
    return self

  def __next__(self) -> PromptBatch:
    return next(self._iterator)

  @property
  def stats(self) -> dict[str, int]:
    """Prompts delivered, filtered (over-long) and truncated so far on this process (restored with the state)."""
    return self._drop_iterator.counts

  def get_state(self) -> dict[str, Any]:
    """The position as a small JSON-serialisable dict (store it in the training checkpoint)."""
    return {"version": _STATE_VERSION, "fingerprint": dict(self._fingerprint), "grain": self._iterator.get_state()}

  def set_state(self, state: Mapping[str, Any], *, strict: bool = True) -> None:
    """Continues from `state` (from `get_state`). With `strict`, the dataset and config must match."""
    if not isinstance(state, Mapping) or state.get("version") != _STATE_VERSION or "grain" not in state:
      raise ValueError(f"not a PromptPipeline state (version {_STATE_VERSION}): keys {sorted(state)}")
    if strict:
      saved = state.get("fingerprint", {})
      diff = [k for k in self._fingerprint if saved.get(k) != self._fingerprint[k]]
      if diff:
        details = ", ".join(f"{k}: saved {saved.get(k)!r} vs now {self._fingerprint[k]!r}" for k in diff)
        raise ValueError(f"pipeline state does not match this pipeline ({details}); build the pipeline with the "
                         "saved dataset and config, or pass strict=False to continue anyway")
    self._iterator.set_state(state["grain"])
