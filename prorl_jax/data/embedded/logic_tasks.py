"""Logic problems from Reasoning Gym (ProRL's logic domain), generated locally and deterministically.

Default tasks are cheap to generate (well under a millisecond each) and their scorers give the stored answer 1.0
with the default config, which is what the rewards module uses to score (`reasoning_gym.get_score_answer_fn`).
Excluded on purpose: `propositional_logic` and `graph_color` (the stored answer is not what the scorer accepts),
and slow generators such as `zebra_puzzles`, `intermediate_integration` and `polynomial_multiplication`.
"""

from __future__ import annotations

import random
from typing import Any

from prorl_jax.data.embedded.common import Problem, derive_seed

DEFAULT_TASKS = (
    "basic_arithmetic", "base_conversion", "bitwise_arithmetic", "caesar_cipher", "calendar_arithmetic",
    "chain_sum", "count_bits", "course_schedule", "decimal_arithmetic", "dice", "family_relationships",
    "fraction_simplification", "gcd", "gsm_symbolic", "isomorphic_strings", "knights_knaves", "lcm",
    "leg_counting", "letter_counting", "letter_jumble", "maze", "mini_sudoku", "number_filtering", "number_sorting",
    "power_function", "ransom_note", "rotate_matrix", "shortest_path", "simple_equations", "spell_backward",
    "spiral_matrix", "syllogism", "time_intervals", "word_sequence_reversal", "word_sorting",
)
# Reasoning Gym derives entry i from Random(seed + i). Some datasets precompute per-index state at construction
# (gsm_symbolic: 0.13 s per million), so the index space per task is bounded.
_VIRTUAL_SIZE = 200_000


class LogicGenerator:
  """Draws Reasoning Gym entries: `rng` picks the task, each task walks its own index sequence.

  Ground truth: {"task": name, "entry": {"question", "answer", "metadata"}}, scored by
  `reasoning_gym.get_score_answer_fn(name)(answer, entry)`.
  """

  def __init__(self, seed: int, tasks: tuple[str, ...] = DEFAULT_TASKS):
    try:
      import reasoning_gym  # pylint: disable=g-import-not-at-top
    except ImportError as e:
      raise ImportError("the 'logic' domain needs reasoning-gym: pip install reasoning-gym==0.1.25") from e
    unknown = [t for t in tasks if t not in reasoning_gym.factory.DATASETS]
    if unknown:
      raise ValueError(f"unknown Reasoning Gym tasks {unknown}; see reasoning_gym.factory.DATASETS")
    self._rg, self._seed, self._tasks = reasoning_gym, seed, tuple(tasks)
    self._datasets: dict[str, Any] = {}
    self._next_index: dict[str, int] = {}

  def _dataset(self, task: str):
    if task not in self._datasets:
      task_seed = derive_seed("reasoning_gym", self._seed, task)
      self._datasets[task] = self._rg.create_dataset(task, seed=task_seed, size=_VIRTUAL_SIZE)
      self._next_index[task] = 0
    return self._datasets[task]

  def __call__(self, rng: random.Random) -> Problem:
    task = rng.choice(self._tasks)
    ds = self._dataset(task)
    index = self._next_index[task]
    if index >= _VIRTUAL_SIZE:
      raise ValueError(f"Reasoning Gym task {task!r} ran out of its {_VIRTUAL_SIZE} indices; use more tasks or "
                       "fewer logic examples")
    self._next_index[task] = index + 1
    entry = dict(ds[index])
    return Problem(prompt=entry["question"], ground_truth={"task": task, "entry": entry},
                   extra={"source": "embedded/logic", "task": task})
