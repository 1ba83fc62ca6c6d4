"""Reasoning Gym: held-out logic benchmarks and the logic training source (ProRL P1 §3.4: 100 held-out samples per
task, plus the out-of-distribution tasks acre, boxnet and game_of_life_halting).

Reasoning Gym builds entry i of a dataset with seed s from `random.Random(s + i)`. Training (the embedded logic
generator, `prorl_jax.data.embedded`) draws task `t` from seed `derive_seed("reasoning_gym", train_seed, t)`, at
most 200,000 indices. The held-out benchmark uses that seed plus 2**31 (mod 2**32), so its generator states can
never coincide with any training index of the same training seed. A problem from a small problem space can still
be generated twice from different states (5 of the 3,500 default held-out prompts occur among 3,500 training draws
with train_seed 0: calendar_arithmetic, dice, lcm); pass the training prompts as `exclude_prompts` to remove them.
An index whose generator gives up (maze occasionally raises) is skipped, deterministically.

A local `source` holds rows dumped from Reasoning Gym datasets ({"question", "answer", "metadata"} with
`metadata["source_dataset"]`), e.g. ProRL's released validation files.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from typing import Any

from prorl_jax.data.embedded import DEFAULT_LOGIC_TASKS, embedded_dataset
from prorl_jax.data.embedded.common import derive_seed
from prorl_jax.data.schema import Example
from prorl_jax.data.sources._rows import HubLocation, Row, Where, column, iter_rows
from prorl_jax.data.sources.registry import Context, SourceSpec

OOD_TASKS = ("acre", "boxnet", "game_of_life_halting")
_log = logging.getLogger(__name__)
_LAYOUT = "Reasoning Gym entries (question, answer, metadata.source_dataset)"
_OFFSET = 2**31


def heldout_seed(task: str, train_seed: int) -> int:
  """The held-out dataset seed of `task`: the training seed's generator states shifted by 2**31."""
  return (derive_seed("reasoning_gym", train_seed, task) + _OFFSET) % 2**32


def _generated_rows(source: Any, hub: HubLocation | None, where: Where, options: Mapping[str, Any]) -> Iterator[Row]:
  if source is not None:
    yield from iter_rows(source, hub or HubLocation("reasoning_gym (local dump)"), where)
    return
  try:
    import reasoning_gym  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError("Reasoning Gym benchmarks need reasoning-gym: pip install reasoning-gym==0.1.25") from e
  tasks = tuple(options["tasks"])
  unknown = [t for t in tasks if t not in reasoning_gym.factory.DATASETS]
  if unknown:
    raise ValueError(f"unknown Reasoning Gym tasks {unknown}; see reasoning_gym.factory.DATASETS")
  excluded = set(options["exclude_prompts"] or ())
  per_task = options["per_task"]
  for task in tasks:
    seed = heldout_seed(task, options["train_seed"])
    # Room for skipped indices: excluded prompts, and the rare index whose generator gives up (maze raises).
    dataset = reasoning_gym.create_dataset(task, seed=seed, size=2 * per_task + len(excluded) + 50)
    kept = failed = 0
    for index in range(len(dataset)):
      if kept == per_task:
        break
      try:
        entry = dict(dataset[index])
      except Exception as e:  # noqa: BLE001 -- a generator failure skips that index, deterministically
        failed += 1
        _log.info("Reasoning Gym %s index %d (seed %d) failed to generate: %s", task, index, seed, e)
        continue
      if entry["question"] in excluded:
        continue
      kept += 1
      yield {**entry, "_task": task, "_index": index, "_seed": seed}
    if kept < per_task:
      raise ValueError(f"Reasoning Gym task {task!r} produced only {kept} of {per_task} held-out problems "
                       f"({failed} indices failed to generate); lower per_task or drop the task")


def convert_reasoning_gym(row: Row, ctx: Context) -> Example:
  """Reasoning Gym entry -> logic Example with ground truth {"task", "entry"}."""
  metadata = column(row, "metadata", ctx.where, layout=_LAYOUT)
  task = row.get("_task") or (metadata.get("source_dataset") if isinstance(metadata, Mapping) else None)
  if not task:
    raise ctx.error("metadata.source_dataset", "is missing", "each entry must name its Reasoning Gym task")
  question = str(column(row, "question", ctx.where, layout=_LAYOUT))
  entry = {"question": question, "answer": row.get("answer"), "metadata": metadata}
  index = row.get("_index", metadata.get("source_index", ctx.index) if isinstance(metadata, Mapping) else ctx.index)
  extra = {"task": task}
  if "_seed" in row:
    extra["seed"] = row["_seed"]
  return ctx.example(id=f"{task}/{index}", domain="logic", prompt=question, ground_truth={"task": task, "entry": entry},
                     extra=extra)


def _training_rows(source: Any, hub: HubLocation | None, where: Where, options: Mapping[str, Any]) -> Iterator[Row]:
  if source is not None:
    yield from _generated_rows(source, hub, where, options)
    return
  for example in embedded_dataset(options["size"], seed=options["train_seed"], domains={"logic": 1.0},
                                  split="train", logic_tasks=tuple(options["tasks"])):
    entry = example.ground_truth["entry"]
    yield {**entry, "_task": example.ground_truth["task"], "_index": example.id.rsplit("/", 1)[-1]}


_HELDOUT_DEFAULTS = {"per_task": 100, "train_seed": 0, "exclude_prompts": None}

LOGIC_BENCHMARKS: Mapping[str, SourceSpec] = {s.name: s for s in (
    SourceSpec(name="reasoning_gym", kind="benchmark", domain="logic", hub=None, rows=_generated_rows,
               convert=convert_reasoning_gym, layout=_LAYOUT,
               description="held-out Reasoning Gym samples (100 per task) of the training tasks",
               defaults={"tasks": DEFAULT_LOGIC_TASKS, **_HELDOUT_DEFAULTS}),
    SourceSpec(name="reasoning_gym_ood", kind="benchmark", domain="logic", hub=None, rows=_generated_rows,
               convert=convert_reasoning_gym, layout=_LAYOUT,
               description="out-of-distribution Reasoning Gym tasks acre, boxnet, game_of_life_halting",
               defaults={"tasks": OOD_TASKS, **_HELDOUT_DEFAULTS}),
)}

LOGIC_TRAINING: Mapping[str, SourceSpec] = {s.name: s for s in (
    SourceSpec(name="reasoning_gym", kind="training", domain="logic", hub=None, rows=_training_rows,
               convert=convert_reasoning_gym, layout=_LAYOUT,
               description="Reasoning Gym problems from the embedded generator (ProRL's logic domain)",
               defaults={"tasks": DEFAULT_LOGIC_TASKS, "size": 1000, "train_seed": 0}),
)}
