"""The "tiny" task suite: short-answer problems a sub-million-parameter model can learn on a laptop CPU, each
scored by the real verifiers (math-verify, Reasoning Gym, the multiple-choice checker).

  math  -- "What is 7 + 12?" (three phrasings)  -> \\boxed{19}
  logic -- Reasoning Gym basic_arithmetic      -> <answer>-7</answer>   (two one-digit terms, + and -)
  stem  -- "Which is larger? (A) 47 (B) 52"     -> \\boxed{B}

The default suite is math + logic (`embedded:tiny` in configs), the embedded default's data and the warm-start
corpus of the tiny checkpoint. The stem comparison task is opt-in (`embedded:tiny?domains=math,logic,stem`): a
two-layer model needs far longer than the default run to learn it.
Splits are disjoint by content hash (`embedded.common.split_of`), so validation problems are never trained on.
"""

from __future__ import annotations

import random

from prorl_jax.data.embedded.common import interleave, make_rng, split_of
from prorl_jax.data.schema import Example

DOMAINS = ("math", "logic")
ALL_DOMAINS = ("math", "logic", "stem")
_LETTERS = "ABCD"
_MAX_OPERAND = 12
_MATH_PHRASINGS = ("What is {a} {op} {b}?", "Compute {a} {op} {b}.", "Find the value of {a} {op} {b}.")
# Reasoning Gym config of the logic task; stored in the ground truth so the verifier rebuilds the same scorer.
LOGIC_CONFIG = {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1, "operators": ["+", "-"]}


def _math(rng: random.Random) -> tuple[str, str, str]:
  a, b = rng.randint(0, _MAX_OPERAND), rng.randint(0, _MAX_OPERAND)
  op = rng.choice("+-")
  answer = a + b if op == "+" else a - b
  prompt = rng.choice(_MATH_PHRASINGS).format(a=a, op=op, b=b)
  return prompt, str(answer), f"\\boxed{{{answer}}}"


def _stem(rng: random.Random) -> tuple[str, str, str]:
  a, b = rng.sample(range(100), 2)
  word = rng.choice(("larger", "smaller"))
  letter = "A" if (a > b) == (word == "larger") else "B"
  return f"Which is {word}? (A) {a} (B) {b}", letter, f"\\boxed{{{letter}}}"


class _Logic:
  """Reasoning Gym basic_arithmetic entries, drawn in blocks from a seeded dataset."""

  def __init__(self, seed: int):
    import reasoning_gym  # Imported lazily: slow, and only the logic domain needs it.
    config = dict(LOGIC_CONFIG, operators=tuple(LOGIC_CONFIG["operators"]))
    self._dataset = reasoning_gym.create_dataset("basic_arithmetic", size=100_000, seed=seed, **config)
    self._next = 0

  def __call__(self, rng: random.Random) -> tuple[str, dict, str]:
    del rng
    entry = self._dataset[self._next]
    self._next += 1
    entry = {"question": entry["question"], "answer": entry["answer"], "metadata": entry["metadata"]}
    truth = {"task": "basic_arithmetic", "entry": entry, "config": LOGIC_CONFIG}
    return entry["question"], truth, f"<answer>{entry['answer']}</answer>"


def tiny_dataset(size: int, *, seed: int = 0, split: str = "train", domains=DOMAINS,
                 with_reference: bool = True) -> list[Example]:
  """`size` examples split evenly over `domains`, interleaved, deterministic in the arguments.

  With `with_reference`, `extra["reference"]` holds a correct response (the warm-start SFT target).
  """
  if split not in ("train", "validation"):
    raise ValueError(f"split must be 'train' or 'validation', got {split!r}")
  per_domain = [size // len(domains) + (i < size % len(domains)) for i in range(len(domains))]
  by_domain = []
  for domain, count in zip(domains, per_domain):
    rng = make_rng("tiny", seed, domain)
    generate = {"math": _math, "stem": _stem}.get(domain) or _Logic(seed)
    seen, examples, draws = set(), [], 0
    while len(examples) < count:
      draws += 1
      if draws > 50 * count + 1000:
        raise ValueError(f"tiny/{domain} has only {len(examples)} distinct {split} problems; ask for fewer")
      prompt, truth, reference = generate(rng)
      if prompt in seen or split_of(f"tiny/{domain}", prompt) != split:
        continue
      seen.add(prompt)
      extra = {"source": f"tiny/{domain}", **({"reference": reference} if with_reference else {})}
      examples.append(Example(id=f"tiny/{split}/s{seed}/{domain}/{len(examples)}", domain=domain, prompt=prompt,
                              ground_truth=truth, extra=extra))
    by_domain.append(examples)
  return interleave(by_domain)
