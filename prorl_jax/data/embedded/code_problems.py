"""Small code problems with tests, in the two formats of the code verifier (APPS/PRIME style).

Call-based: ground truth {"fn_name": f, "inputs": [[args...], ...], "outputs": [value, ...]}.
Stdin/stdout: ground truth {"inputs": ["<stdin text>", ...], "outputs": ["<stdout text>", ...]}.

Every template has two independent implementations: an `oracle` (a Python callable here, used to compute the
expected outputs) and a reference `solution` (source text, kept in `extra["reference_solution"]`). Tests execute
the solution in a subprocess against the ground truth, so a wrong oracle or a wrong solution is caught.
Templates are parameterised (thresholds, separators, modes) so problem statements vary.
"""

from __future__ import annotations

import math
import random
import string
from collections.abc import Callable
from typing import Any

from prorl_jax.data.embedded import code_stdin
from prorl_jax.data.embedded.code_task import CodeTask, ints as _ints, word as _word
from prorl_jax.data.embedded.common import Problem

NUM_TESTS = 8


def _sum_greater(rng):
  k = rng.randint(-10, 20)
  return CodeTask(
      f"Write a function `sum_greater(nums)` that returns the sum of the integers in the list `nums` that are "
      f"strictly greater than {k}. The sum of no numbers is 0.",
      f"def sum_greater(nums):\n    total = 0\n    for x in nums:\n        if x > {k}:\n            total += x\n"
      "    return total\n",
      lambda nums: sum(v for v in nums if v > k), lambda r: [_ints(r, -50, 50)], "sum_greater")


def _reverse_words(rng):
  sep = rng.choice([" ", "-", ",", "_", "|", "/", "+", ";"])
  return CodeTask(
      f"Write a function `reverse_words(s)` that takes a non-empty string of lowercase words separated by single "
      f"spaces and returns the words in reverse order joined by {sep!r}.",
      f"def reverse_words(s):\n    words = s.split()\n    words.reverse()\n    return {sep!r}.join(words)\n",
      lambda s: sep.join(reversed(s.split(" "))),
      lambda r: [" ".join(_word(r) for _ in range(r.randint(1, 6)))], "reverse_words")


def _count_char(rng):
  c = rng.choice(string.ascii_letters)
  return CodeTask(
      f"Write a function `count_char(s)` that returns how many times the character {c!r} occurs in the string `s` "
      "(case-sensitive).",
      f"def count_char(s):\n    return s.count({c!r})\n",
      lambda s: sum(1 for ch in s if ch == c),
      lambda r: ["".join(r.choice(c + c.swapcase() + "xyz ") for _ in range(r.randint(0, 20)))], "count_char")


def _rotate_right(rng):
  k = rng.randint(1, 9)
  def oracle(nums):
    out = list(nums)
    for _ in range(k if out else 0):
      out.insert(0, out.pop())
    return out
  return CodeTask(
      f"Write a function `rotate_right(nums)` that returns the list `nums` rotated to the right by {k} positions: "
      "each step moves the last element to the front. An empty list stays empty.",
      f"def rotate_right(nums):\n    if not nums:\n        return []\n    k = {k} % len(nums)\n"
      "    return nums[len(nums) - k:] + nums[:len(nums) - k]\n",
      oracle, lambda r: [_ints(r, -9, 99)], "rotate_right")


def _scale(rng):
  k = rng.choice([i for i in range(-7, 13) if i not in (0, 1)])
  return CodeTask(
      f"Write a function `scale(nums)` that returns a new list with every element of `nums` multiplied by {k}.",
      f"def scale(nums):\n    return [x * {k} for x in nums]\n",
      lambda nums: list(map(lambda v: v * k, nums)), lambda r: [_ints(r, -30, 30)], "scale")


def _fib(rng):
  a, b = rng.randint(0, 5), rng.randint(1, 7)
  def oracle(n):
    memo = {0: a, 1: b}
    for i in range(2, n + 1):
      memo[i] = memo[i - 1] + memo[i - 2]
    return memo[n]
  return CodeTask(
      f"A sequence is defined by F(0) = {a}, F(1) = {b} and F(n) = F(n-1) + F(n-2). Write a function `seq(n)` "
      "that returns F(n) for 0 <= n <= 60.",
      f"def seq(n):\n    x, y = {a}, {b}\n    for _ in range(n):\n        x, y = y, x + y\n    return x\n",
      oracle, lambda r: [r.randint(0, 60)], "seq")


def _palindrome(rng):
  loose = rng.random() < 0.5
  rule = ("when letter case is ignored and every character that is not a letter is removed" if loose
          else "exactly (case-sensitive, keeping every character)")
  def oracle(s):
    t = [ch.lower() for ch in s if ch.isalpha()] if loose else list(s)
    return all(t[i] == t[-1 - i] for i in range(len(t) // 2))
  def make(r):
    half = "".join(r.choice("abAB ,c") for _ in range(r.randint(0, 6)))
    return [half + r.choice(["", "x", "A"]) + (half[::-1] if r.random() < 0.6 else _word(r, 0, 4))]
  body = ("    t = ''.join(ch.lower() for ch in s if ch.isalpha())\n    return t == t[::-1]\n" if loose
          else "    return s == s[::-1]\n")
  return CodeTask(f"Write a function `is_palindrome(s)` that returns True if the string `s` reads the same forwards "
                  f"and backwards {rule}, and False otherwise.", "def is_palindrome(s):\n" + body, oracle, make,
                  "is_palindrome")


def _max_window(rng):
  k = rng.randint(1, 5)
  return CodeTask(
      f"Write a function `max_window(nums)` that returns the largest sum of {k} consecutive elements of the list "
      f"`nums` (it has at least {k} elements).",
      f"def max_window(nums):\n    cur = sum(nums[:{k}])\n    best = cur\n    for i in range({k}, len(nums)):\n"
      f"        cur += nums[i] - nums[i - {k}]\n        best = max(best, cur)\n    return best\n",
      lambda nums: max(sum(nums[i:i + k]) for i in range(len(nums) - k + 1)),
      lambda r: [_ints(r, -20, 20, k, k + 10)], "max_window")


def _count_in_set(rng):
  letters = "".join(sorted(rng.sample(string.ascii_lowercase, rng.randint(2, 6))))
  return CodeTask(
      f"Write a function `count_chars(s)` that returns how many characters of the string `s` are one of the "
      f"characters in {letters!r}.",
      f"def count_chars(s):\n    allowed = set({letters!r})\n    return sum(1 for ch in s if ch in allowed)\n",
      lambda s: len([ch for ch in s if letters.find(ch) >= 0]), lambda r: [_word(r, 0, 25)], "count_chars")


def _digit_power_sum(rng):
  k = rng.randint(1, 5)
  return CodeTask(
      f"Write a function `digit_power_sum(n)` that returns the sum of the {k}-th powers of the decimal digits of "
      "the non-negative integer `n`.",
      f"def digit_power_sum(n):\n    total = 0\n    while True:\n        total += (n % 10) ** {k}\n        n //= 10\n"
      "        if n == 0:\n            return total\n",
      lambda n: sum(int(d) ** k for d in str(n)), lambda r: [r.choice([0, r.randint(1, 10**r.randint(1, 12))])],
      "digit_power_sum")


def _kth_largest(rng):
  k = rng.randint(1, 4)
  return CodeTask(
      f"Write a function `kth_largest(nums)` that returns the {k}-th largest distinct value in the list `nums`, or "
      f"None if `nums` has fewer than {k} distinct values.",
      f"def kth_largest(nums):\n    values = sorted(set(nums), reverse=True)\n"
      f"    return values[{k - 1}] if len(values) >= {k} else None\n",
      lambda nums: (lambda d: d[-k] if len(d) >= k else None)(sorted(set(nums))), lambda r: [_ints(r, -5, 9)],
      "kth_largest")


def _caesar(rng):
  k = rng.randint(1, 25)
  return CodeTask(
      f"Write a function `shift(s)` that moves every lowercase letter of `s` forward by {k} places in the alphabet "
      "(wrapping from z to a) and leaves every other character unchanged.",
      f"def shift(s):\n    out = []\n    for ch in s:\n        if 'a' <= ch <= 'z':\n"
      f"            ch = chr((ord(ch) - 97 + {k}) % 26 + 97)\n        out.append(ch)\n    return ''.join(out)\n",
      lambda s: s.translate(str.maketrans(string.ascii_lowercase,
                                          string.ascii_lowercase[k:] + string.ascii_lowercase[:k])),
      lambda r: ["".join(r.choice(string.ascii_lowercase + "  .!AZ") for _ in range(r.randint(0, 30)))], "shift")


def _run_length(rng):
  count_first = rng.random() < 0.5
  fmt = "its length followed by the character" if count_first else "the character followed by its length"
  def oracle(s):
    out, i = "", 0
    while i < len(s):
      j = i
      while j < len(s) and s[j] == s[i]:
        j += 1
      out += f"{j - i}{s[i]}" if count_first else f"{s[i]}{j - i}"
      i = j
    return out
  piece = "str(len(run)) + run[0]" if count_first else "run[0] + str(len(run))"
  return CodeTask(
      f"Write a function `encode(s)` that returns the run-length encoding of the letter string `s`: each maximal "
      f"run of one repeated character becomes {fmt} (for example {oracle('aaab')!r} for 'aaab').",
      "import itertools\n\ndef encode(s):\n    out = ''\n    for _, group in itertools.groupby(s):\n"
      f"        run = ''.join(group)\n        out += {piece}\n    return out\n",
      oracle, lambda r: ["".join(r.choice("aab") * r.randint(1, 4) for _ in range(r.randint(0, 6)))], "encode")


def _gcd_lcm(rng):
  use_gcd = rng.random() < 0.5
  kind = "greatest common divisor" if use_gcd else "least common multiple"
  def oracle(nums):
    best = nums[0]
    for v in nums[1:]:
      best = math.gcd(best, v) if use_gcd else best * v // math.gcd(best, v)
    return best
  op = "math.gcd(*nums)" if use_gcd else "math.lcm(*nums)"
  return CodeTask(
      f"Write a function `combine(nums)` that returns the {kind} of all the positive integers in the non-empty list "
      "`nums`.", f"import math\n\ndef combine(nums):\n    return {op}\n", oracle,
      lambda r: [[r.choice([6, 10, 12, 15, 18, 20, 28, 36]) * r.randint(1, 4) for _ in range(r.randint(1, 5))]],
      "combine")


def _matrix_turn(rng):
  mode = rng.choice(["transpose", "clockwise", "counterclockwise"])
  what = {"transpose": "its transpose", "clockwise": "the matrix rotated 90 degrees clockwise",
          "counterclockwise": "the matrix rotated 90 degrees counterclockwise"}[mode]
  def oracle(m):
    rows, cols = len(m), len(m[0])
    t = [[m[i][j] for i in range(rows)] for j in range(cols)]
    return t if mode == "transpose" else [row[::-1] for row in t] if mode == "clockwise" else t[::-1]
  body = {"transpose": "[list(c) for c in zip(*m)]", "clockwise": "[list(c) for c in zip(*m[::-1])]",
          "counterclockwise": "[list(c) for c in zip(*m)][::-1]"}[mode]
  def make(r):
    rows, cols = r.randint(1, 4), r.randint(1, 4)
    return [[[r.randint(0, 9) for _ in range(cols)] for _ in range(rows)]]
  return CodeTask(f"Write a function `turn(m)` that takes a matrix given as a non-empty list of equal-length rows "
                  f"and returns {what}, as a list of lists.", f"def turn(m):\n    return {body}\n", oracle, make,
                  "turn")


def _pair_count(rng):
  k = rng.randint(-5, 15)
  return CodeTask(
      f"Write a function `pair_count(nums)` that returns the number of index pairs i < j with nums[i] + nums[j] "
      f"== {k}.",
      "from collections import Counter\n\ndef pair_count(nums):\n    seen = Counter()\n    total = 0\n"
      f"    for x in nums:\n        total += seen[{k} - x]\n        seen[x] += 1\n    return total\n",
      lambda nums: sum(1 for i in range(len(nums)) for j in range(i + 1, len(nums)) if nums[i] + nums[j] == k),
      lambda r: [_ints(r, -5, 15, 0, 14)], "pair_count")


def _collatz(rng):
  k = rng.randint(1, 10)
  def oracle(n):
    steps = 0
    while n > k:
      n, steps = (n // 2 if n % 2 == 0 else 3 * n + 1), steps + 1
    return steps
  return CodeTask(
      f"Write a function `steps(n)` that returns how many steps the process 'n -> n / 2 if n is even, n -> 3n + 1 "
      f"if n is odd' needs, starting from the positive integer `n`, to reach a value <= {k} (0 if n <= {k}).",
      f"def steps(n):\n    count = 0\n    while n > {k}:\n        if n % 2:\n            n = 3 * n + 1\n"
      "        else:\n            n //= 2\n        count += 1\n    return count\n",
      oracle, lambda r: [r.randint(1, 5000)], "steps")


def _prefix_mod(rng):
  m = rng.randint(2, 50)
  def oracle(nums):
    return [sum(nums[:i + 1]) % m for i in range(len(nums))]
  return CodeTask(
      f"Write a function `prefix_mod(nums)` that returns the list of prefix sums of `nums` (the i-th is nums[0] + "
      f"... + nums[i]), each reduced modulo {m} to a value in [0, {m}).",
      f"def prefix_mod(nums):\n    out, total = [], 0\n    for x in nums:\n        total += x\n"
      f"        out.append(total % {m})\n    return out\n",
      oracle, lambda r: [_ints(r, -100, 100)], "prefix_mod")


CALL_TEMPLATES: dict[str, Callable[[random.Random], CodeTask]] = {
    "sum_greater": _sum_greater, "reverse_words": _reverse_words, "count_char": _count_char,
    "rotate_right": _rotate_right, "scale": _scale, "fib": _fib, "palindrome": _palindrome,
    "max_window": _max_window, "count_in_set": _count_in_set, "digit_power_sum": _digit_power_sum,
    "kth_largest": _kth_largest, "caesar": _caesar, "run_length": _run_length, "gcd_lcm": _gcd_lcm,
    "matrix_turn": _matrix_turn, "pair_count": _pair_count, "collatz": _collatz, "prefix_mod": _prefix_mod,
}
TEMPLATES: dict[str, Callable[[random.Random], CodeTask]] = {**CALL_TEMPLATES, **code_stdin.STDIN_TEMPLATES}


def _show(value: Any) -> str:
  return repr(value)


def generate(rng: random.Random) -> Problem:
  """One code problem with NUM_TESTS tests (plus one worked example in the statement)."""
  name = rng.choice(sorted(TEMPLATES))
  task = TEMPLATES[name](rng)
  example, *inputs = [task.make_input(rng) for _ in range(NUM_TESTS + 1)]
  if task.fn_name is not None:
    outputs = [task.oracle(*args) for args in inputs]
    call = f"{task.fn_name}({', '.join(map(_show, example))})"
    prompt = f"{task.statement}\n\nExample: `{call}` returns `{_show(task.oracle(*example))}`."
    truth = {"fn_name": task.fn_name, "inputs": inputs, "outputs": outputs}
  else:
    outputs = [task.oracle(text) for text in inputs]
    prompt = (f"{task.statement}\n\nExample input:\n```\n{example}```\nExample output:\n```\n"
              f"{task.oracle(example)}```")
    truth = {"inputs": inputs, "outputs": outputs}
  return Problem(prompt=prompt, ground_truth=truth, split_key=task.statement,
                 extra={"source": "embedded/code", "template": name, "reference_solution": task.solution})
