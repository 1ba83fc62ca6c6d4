"""Synthetic math problems with exact answers (arithmetic, algebra, word problems).

Each template draws its parameters from `rng` so that the answer is exact (an integer or a reduced fraction) and
returns the prompt, the answer and the parameters (kept in `extra["params"]` so tests can re-derive the answer).
The answer string is LaTeX that Math-Verify parses ("12", "\\frac{3}{4}").
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from fractions import Fraction

from prorl_jax.data.embedded.common import Problem, latex_number

_NAMES = ("Ava", "Ben", "Chloe", "Diego", "Emma", "Farah", "Gus", "Hana", "Ivan", "Jada", "Kofi", "Lena", "Mateo",
          "Nora", "Omar", "Priya", "Quinn", "Rosa", "Sam", "Tara", "Uma", "Victor", "Wen", "Yusuf", "Zoe")
_ITEMS = ("notebooks", "pencils", "apples", "tickets", "stickers", "mugs", "books", "candles", "plants", "scarves")


def _linear_equation(rng: random.Random):
  x, a = rng.randint(-20, 20), rng.choice([i for i in range(-9, 10) if i not in (0, 1)])
  b = rng.randint(-50, 50)
  c = a * x + b
  sign = "+" if b >= 0 else "-"
  return f"Solve for $x$: ${a}x {sign} {abs(b)} = {c}$.", x, {"a": a, "b": b, "c": c}


def _change(rng: random.Random):
  name, item = rng.choice(_NAMES), rng.choice(_ITEMS)
  n, price = rng.randint(2, 12), rng.randint(2, 15)
  bill = rng.choice([b for b in (20, 50, 100, 200) if b > n * price] or [500])
  text = (f"{name} buys {n} {item} at ${price} each and pays with a ${bill} bill. How many dollars of change "
          f"does {name} receive?")
  return text, bill - n * price, {"n": n, "price": price, "bill": bill}


def _fraction_sum(rng: random.Random):
  a, b, c, d = rng.randint(1, 12), rng.randint(2, 12), rng.randint(1, 12), rng.randint(2, 12)
  op = rng.choice("+-")
  value = Fraction(a, b) + Fraction(c, d) if op == "+" else Fraction(a, b) - Fraction(c, d)
  return (f"Compute $\\frac{{{a}}}{{{b}}} {op} \\frac{{{c}}}{{{d}}}$ and give the result as a fraction in lowest "
          "terms.", value, {"a": a, "b": b, "c": c, "d": d, "op": op})


def _percent(rng: random.Random):
  p = rng.choice([5, 10, 12, 15, 20, 25, 30, 35, 40, 45, 50, 60, 75, 80, 90, 120, 150])
  n = rng.randint(1, 60) * 20
  return f"What is {p}% of {n}?", Fraction(p * n, 100), {"p": p, "n": n}


def _rectangle(rng: random.Random):
  w, extra = rng.randint(2, 30), rng.randint(1, 20)
  length = w + extra
  perimeter = 2 * (w + length)
  return (f"A rectangle is {extra} cm longer than it is wide, and its perimeter is {perimeter} cm. What is its "
          "area in square centimetres?", w * length, {"extra": extra, "perimeter": perimeter})


def _arithmetic_series(rng: random.Random):
  a, d, n = rng.randint(-10, 20), rng.randint(1, 9), rng.randint(5, 40)
  terms = [a + i * d for i in range(3)]
  return (f"What is the sum of the first {n} terms of the arithmetic sequence {', '.join(map(str, terms))}, ...?",
          n * (2 * a + (n - 1) * d) // 2, {"first_terms": terms, "n": n})


def _system(rng: random.Random):
  x, y = rng.randint(-15, 15), rng.randint(-15, 15)
  a, b = rng.randint(1, 6), rng.randint(1, 6)
  c, d = rng.randint(1, 6), rng.choice([-1, -2, -3, 1, 2, 3])
  while a * d - b * c == 0:
    d += 1
  return (f"If ${a}x + {b}y = {a * x + b * y}$ and ${c}x {'+' if d > 0 else '-'} {abs(d)}y = {c * x + d * y}$, "
          "what is $x \\cdot y$?", x * y, {"a": a, "b": b, "c": c, "d": d, "e": a * x + b * y, "f": c * x + d * y})


def _quadratic(rng: random.Random):
  r1, r2 = rng.sample(range(-12, 13), 2)  # Distinct roots: "the roots" is unambiguous.
  s, p = r1 + r2, r1 * r2
  poly = "x^2" + (f" {'-' if s > 0 else '+'} {abs(s)}x" if s else "") + (f" {'+' if p >= 0 else '-'} {abs(p)}" if p
                                                                        else "")
  ask = rng.choice(["largest", "sum of the squares of the"])
  answer = max(r1, r2) if ask == "largest" else r1 * r1 + r2 * r2
  return f"What is the {ask} root{'s' if ask != 'largest' else ''} of ${poly} = 0$?", answer, {
      "s": s, "p": p, "ask": ask}


def _lcm(rng: random.Random):
  a, b = rng.randint(4, 60), rng.randint(4, 60)
  kind = rng.choice(["least common multiple", "greatest common divisor"])
  answer = a * b // math.gcd(a, b) if kind.startswith("least") else math.gcd(a, b)
  return f"What is the {kind} of {a} and {b}?", answer, {"a": a, "b": b, "kind": kind}


def _modpow(rng: random.Random):
  a, k, m = rng.randint(2, 19), rng.randint(5, 60), rng.randint(3, 13)
  return f"What is the remainder when ${a}^{{{k}}}$ is divided by {m}?", pow(a, k, m), {"a": a, "k": k, "m": m}


def _committee(rng: random.Random):
  n = rng.randint(5, 16)
  k = rng.randint(2, min(6, n - 1))
  return (f"In how many ways can a committee of {k} people be chosen from a club of {n} members?",
          math.comb(n, k), {"n": n, "k": k})


def _missing_value(rng: random.Random):
  count, mean = rng.randint(4, 7), rng.randint(5, 40)
  while True:
    known = [rng.randint(1, 2 * mean) for _ in range(count - 1)]
    missing = mean * count - sum(known)
    if 1 <= missing <= 3 * mean:
      break
  return (f"The mean of {count} numbers is {mean}. {count - 1} of them are {', '.join(map(str, known))}. "
          "What is the remaining number?", missing, {"count": count, "known": known, "mean": mean})


def _speed(rng: random.Random):
  speed, t1, t2 = rng.randint(20, 120), rng.randint(2, 6), rng.randint(2, 12)
  return (f"A train covers {speed * t1} km in {t1} hours. At the same speed, how many kilometres does it cover in "
          f"{t2} hours?", speed * t2, {"distance": speed * t1, "t1": t1, "t2": t2})


def _pipes(rng: random.Random):
  a, b = rng.randint(2, 12), rng.randint(2, 12)
  return (f"One pipe fills a tank in {a} hours and another fills it in {b} hours. Working together, how many hours "
          "do they take to fill the tank?", Fraction(a * b, a + b), {"a": a, "b": b})


def _ages(rng: random.Random):
  bob, k, n = rng.randint(2, 20), rng.randint(2, 5), rng.randint(2, 15)
  name1, name2 = rng.sample(_NAMES, 2)
  total = bob * k + bob + 2 * n
  return (f"{name1} is {k} times as old as {name2}. In {n} years the sum of their ages will be {total}. How old is "
          f"{name2} now?", bob, {"k": k, "n": n, "total": total})


def _polynomial_value(rng: random.Random):
  a, b, c, x = rng.randint(-5, 5) or 1, rng.randint(-9, 9), rng.randint(-20, 20), rng.randint(-6, 6)
  return (f"Let $f(x) = {a}x^2 + ({b})x + ({c})$. What is $f({x})$?", a * x * x + b * x + c,
          {"a": a, "b": b, "c": c, "x": x})


def _marbles(rng: random.Random):
  r, b = rng.randint(2, 10), rng.randint(1, 10)
  return (f"A bag holds {r} red and {b} blue marbles. Two marbles are drawn at random without replacement. What is "
          "the probability that both are red?", Fraction(r * (r - 1), (r + b) * (r + b - 1)), {"r": r, "b": b})


TEMPLATES: dict[str, Callable[[random.Random], tuple]] = {
    "linear_equation": _linear_equation, "change": _change, "fraction_sum": _fraction_sum, "percent": _percent,
    "rectangle": _rectangle, "arithmetic_series": _arithmetic_series, "system": _system, "quadratic": _quadratic,
    "lcm_gcd": _lcm, "modpow": _modpow, "committee": _committee, "missing_value": _missing_value, "speed": _speed,
    "pipes": _pipes, "ages": _ages, "polynomial_value": _polynomial_value, "marbles": _marbles,
}


def generate(rng: random.Random) -> Problem:
  """One math problem; ground truth is the exact answer as a LaTeX string."""
  name = rng.choice(sorted(TEMPLATES))
  prompt, answer, params = TEMPLATES[name](rng)
  return Problem(prompt=prompt, ground_truth=latex_number(answer),
                 extra={"source": "embedded/math", "template": name, "params": params})
