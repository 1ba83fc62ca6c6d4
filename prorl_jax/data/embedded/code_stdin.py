"""Stdin/stdout code problems (competitive-programming style): read standard input, print the answer.

Same contract as the call-based templates in `code_problems`: an independent oracle computes the expected stdout
and the reference solution is source text checked by the tests.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from prorl_jax.data.embedded.code_task import CodeTask, ints, word


def _lines(*rows) -> str:
  return "".join(f"{r}\n" for r in rows)


def _sum_divisible(rng):
  k = rng.randint(2, 9)
  def make(r):
    nums = ints(r, -60, 60, 1, 12)
    return _lines(len(nums), " ".join(map(str, nums)))
  def oracle(text):
    nums = [int(t) for t in text.split()[1:]]
    return _lines(sum(v for v in nums if v % k == 0))
  return CodeTask(
      f"The first line of input holds n, the second line n integers. Print the sum of those integers that are "
      f"divisible by {k} (0 if none are).",
      "n = int(input())\nnums = list(map(int, input().split()))\n"
      f"print(sum(x for x in nums if x % {k} == 0))\n", oracle, make)


def _sort_words(rng):
  sep = rng.choice([" ", ",", "-", ";", "|"])
  def oracle(text):
    words = text.split()
    for i in range(1, len(words)):  # Insertion sort on (length, word): independent of the solution's sorted().
      j = i
      while j > 0 and (len(words[j - 1]), words[j - 1]) > (len(words[j]), words[j]):
        words[j - 1], words[j] = words[j], words[j - 1]
        j -= 1
    return _lines(sep.join(words))
  return CodeTask(
      f"Read one line of lowercase words separated by spaces. Print the words sorted by length, shortest first, "
      f"breaking ties alphabetically, joined by {sep!r}.",
      f"words = input().split()\nprint({sep!r}.join(sorted(words, key=lambda w: (len(w), w))))\n",
      oracle, lambda r: _lines(" ".join(word(r, 1, 6) for _ in range(r.randint(1, 8)))))


def _modpow_cases(rng):
  m = rng.randint(2, 1000)
  def make(r):
    cases = [(r.randint(0, 10**6), r.randint(0, 10**6)) for _ in range(r.randint(1, 5))]
    return _lines(len(cases), *(f"{a} {b}" for a, b in cases))
  def oracle(text):
    rows = text.splitlines()[1:]
    out = []
    for row in rows:
      a, b = map(int, row.split())
      value, base, e = 1 % m, a % m, b
      while e:  # Square-and-multiply, independent of the solution's pow().
        if e & 1:
          value = value * base % m
        base, e = base * base % m, e >> 1
      out.append(value)
    return _lines(*out)
  return CodeTask(
      f"The first line holds T; each of the next T lines holds two integers a and b. For each line print a to the "
      f"power b modulo {m}.",
      f"t = int(input())\nfor _ in range(t):\n    a, b = map(int, input().split())\n    print(pow(a, b, {m}))\n",
      oracle, make)


def _distinct_substrings(rng):
  k = rng.randint(1, 4)
  def oracle(text):
    s = text.strip()
    seen = []
    for i in range(len(s) - k + 1):
      if s[i:i + k] not in seen:
        seen.append(s[i:i + k])
    return _lines(len(seen))
  return CodeTask(
      f"Read a string of lowercase letters. Print how many distinct substrings of length {k} it contains.",
      f"s = input().strip()\nprint(len({{s[i:i + {k}] for i in range(len(s) - {k} + 1)}}))\n",
      oracle, lambda r: _lines("".join(r.choice("abc") for _ in range(r.randint(1, 15)))))


def _best_student(rng):
  highest = rng.random() < 0.5
  def make(r):
    names = r.sample(["ana", "bo", "cy", "dee", "eli", "fay", "gil", "hal", "ida"], r.randint(1, 6))
    return _lines(len(names), *(f"{n} {r.randint(0, 10)}" for n in names))
  def oracle(text):
    rows = [row.split() for row in text.splitlines()[1:]]
    best = None
    for name, score in rows:
      key = (-int(score) if highest else int(score), name)
      best = key if best is None or key < best else best
    return _lines(best[1])
  word_ = "highest" if highest else "lowest"
  sign = "-" if highest else ""
  return CodeTask(
      f"The first line holds n; each of the next n lines holds a name and an integer score. Print the name with "
      f"the {word_} score; if several share it, print the alphabetically first of them.",
      "n = int(input())\nrows = []\nfor _ in range(n):\n    name, score = input().split()\n"
      f"    rows.append(({sign}int(score), name))\nprint(min(rows)[1])\n", oracle, make)


def _longest_run(rng):
  increasing = rng.random() < 0.5
  def make(r):
    nums = ints(r, 0, 9, 1, 14)
    return _lines(len(nums), " ".join(map(str, nums)))
  def oracle(text):
    nums = [int(t) for t in text.split()[1:]]
    best = 0
    for i in range(len(nums)):
      j = i
      while j + 1 < len(nums) and (nums[j + 1] > nums[j] if increasing else nums[j + 1] < nums[j]):
        j += 1
      best = max(best, j - i + 1)
    return _lines(best)
  cmp = ">" if increasing else "<"
  return CodeTask(
      f"The first line holds n >= 1, the second n integers. Print the length of the longest contiguous run that is "
      f"strictly {'increasing' if increasing else 'decreasing'}.",
      "n = int(input())\na = list(map(int, input().split()))\nbest = cur = 1\nfor i in range(1, n):\n"
      f"    cur = cur + 1 if a[i] {cmp} a[i - 1] else 1\n    best = max(best, cur)\nprint(best)\n", oracle, make)


def _triangle(rng):
  c, right = rng.choice("*#+@%"), rng.random() < 0.5
  def oracle(text):
    n = int(text)
    return "".join(" " * (n - i) * right + c * i + "\n" for i in range(1, n + 1))
  pad = "' ' * (n - i) + " if right else ""
  return CodeTask(
      f"Read an integer n (1 <= n <= 9). Print n lines; line i (from 1) holds i copies of {c!r}"
      + (", right-aligned to width n with leading spaces." if right else " and nothing else."),
      f"n = int(input())\nfor i in range(1, n + 1):\n    print({pad}{c!r} * i)\n",
      oracle, lambda r: _lines(r.randint(1, 9)))


def _matrix_sums(rng):
  by_row = rng.random() < 0.5
  def make(r):
    rows, cols = r.randint(1, 4), r.randint(1, 4)
    return _lines(f"{rows} {cols}", *(" ".join(str(r.randint(-9, 9)) for _ in range(cols)) for _ in range(rows)))
  def oracle(text):
    lines = text.splitlines()
    rows, cols = map(int, lines[0].split())
    grid = [[int(t) for t in line.split()] for line in lines[1:rows + 1]]
    sums = ([sum(row) for row in grid] if by_row else [sum(grid[i][j] for i in range(rows)) for j in range(cols)])
    return _lines(" ".join(map(str, sums)))
  body = "[sum(r) for r in g]" if by_row else "[sum(c) for c in zip(*g)]"
  return CodeTask(
      f"The first line holds r and c; the next r lines hold c integers each. Print the sum of each "
      f"{'row' if by_row else 'column'}, in order, on one line separated by spaces.",
      f"r, c = map(int, input().split())\ng = [list(map(int, input().split())) for _ in range(r)]\n"
      f"print(' '.join(map(str, {body})))\n", oracle, make)


STDIN_TEMPLATES: dict[str, Callable[[random.Random], CodeTask]] = {
    "stdin_sum_divisible": _sum_divisible, "stdin_sort_words": _sort_words, "stdin_modpow": _modpow_cases,
    "stdin_distinct_substrings": _distinct_substrings, "stdin_best_student": _best_student,
    "stdin_longest_run": _longest_run, "stdin_triangle": _triangle, "stdin_matrix_sums": _matrix_sums,
}
