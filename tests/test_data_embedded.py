"""Tests for the embedded dataset: determinism, disjoint splits, and ground truths checked independently.

Math answers are re-derived with sympy/brute force from the stored parameters, STEM letters from the physics and
chemistry formulas, code ground truths by running the reference solutions in a subprocess, Reasoning Gym entries
by Reasoning Gym's own scorers after a file round trip, and IFEval kwargs against IFEval's argument names.
"""

import collections
import itertools
import json
import math
import re
import subprocess
import sys
import time
from fractions import Fraction

import pytest
import sympy

from prorl_jax.data import embedded_dataset, load_examples, save_examples
from prorl_jax.data.embedded import code_problems, ifeval_prompts, math_problems, stem_problems
from prorl_jax.data.embedded.common import make_rng, split_of

NON_LOGIC = ("math", "code", "stem", "ifeval")


@pytest.fixture(scope="module")
def train():
  return embedded_dataset(1000, seed=0)


@pytest.fixture(scope="module")
def validation():
  return embedded_dataset(500, seed=0, split="validation")


def test_deterministic_sizes_and_ids(train):
  again = embedded_dataset(1000, seed=0)
  assert [e.to_row() for e in again] == [e.to_row() for e in train]
  assert collections.Counter(e.domain for e in train) == {d: 200 for d in ("math", "code", "logic", "stem", "ifeval")}
  assert len({e.id for e in train}) == 1000 and len({e.prompt for e in train}) == 1000
  other = embedded_dataset(1000, seed=1)
  assert len({e.prompt for e in train} & {e.prompt for e in other}) < 150  # Mostly different problems.
  assert [e.domain for e in train[:20]] != sorted(e.domain for e in train[:20])  # Domains are interleaved.


def test_weights_and_extension():
  ex = embedded_dataset(10, seed=2, domains={"math": 3, "stem": 1, "code": 0})
  assert collections.Counter(e.domain for e in ex) == {"math": 8, "stem": 2}
  small = {e.prompt for e in embedded_dataset(40, seed=5, domains=NON_LOGIC)}
  assert small <= {e.prompt for e in embedded_dataset(80, seed=5, domains=NON_LOGIC)}
  with pytest.raises(ValueError, match="split must be one of"):
    embedded_dataset(3, split="test")
  with pytest.raises(ValueError, match="domains must name some of"):
    embedded_dataset(3, domains=("math", "poetry"))


def test_splits_are_disjoint_by_problem(train, validation):
  assert all(e.extra["split"] == "validation" for e in validation)
  assert {e.prompt for e in train}.isdisjoint(e.prompt for e in validation)
  val_seed7 = embedded_dataset(300, seed=7, split="validation", domains=NON_LOGIC)
  keys = lambda exs: {_split_key(e) for e in exs}  # noqa: E731
  assert keys(train).isdisjoint(keys(validation) | keys(val_seed7))
  for e in itertools.chain(train, validation):
    assert split_of(e.domain, _split_key(e)) == e.extra["split"]


def _split_key(e):
  if e.domain == "code":
    return e.prompt.split("\n\nExample")[0]
  if e.domain == "stem":
    return e.prompt.split("\n\nA. ")[0]
  return e.prompt


def test_generation_is_fast():
  embedded_dataset(50, seed=9)  # Imports and Reasoning Gym word lists.
  start = time.perf_counter()
  ex = embedded_dataset(3000, seed=10)
  elapsed = time.perf_counter() - start
  assert len(ex) == 3000 and elapsed < 6.0, elapsed  # ~1.5 s on the 2-core dev machine.


# --------------------------------------------------------------------------------------------------- math

def _assert_params_in_text(text, params, skip=()):
  """Every numeric parameter is printed in the problem text (so the answer is derivable from the prompt)."""
  for key, value in params.items():
    if key in skip or isinstance(value, (str, list)) or value == 0:
      continue
    assert f"{abs(value):.10g}" in text, (key, value, text)


def _as_fraction(latex):
  m = re.fullmatch(r"(-?)\\frac\{(\d+)\}\{(\d+)\}", latex)
  return Fraction(int(m[2]), int(m[3])) * (-1 if m[1] else 1) if m else Fraction(int(latex))


x_, y_ = sympy.symbols("x y")
MATH_REFERENCE = {
    "linear_equation": lambda p: sympy.solve(p["a"] * x_ + p["b"] - p["c"], x_)[0],
    "change": lambda p: p["bill"] - p["n"] * p["price"],
    "fraction_sum": lambda p: (sympy.Rational(p["a"], p["b"])
                               + (1 if p["op"] == "+" else -1) * sympy.Rational(p["c"], p["d"])),
    "percent": lambda p: sympy.Rational(p["p"], 100) * p["n"],
    "rectangle": lambda p: (lambda w: w * (w + p["extra"]))(
        sympy.solve(2 * x_ + 2 * (x_ + p["extra"]) - p["perimeter"], x_)[0]),
    "arithmetic_series": lambda p: sum(p["first_terms"][0] + i * (p["first_terms"][1] - p["first_terms"][0])
                                       for i in range(p["n"])),
    "system": lambda p: (lambda s: s[x_] * s[y_])(sympy.solve([p["a"] * x_ + p["b"] * y_ - p["e"],
                                                                p["c"] * x_ + p["d"] * y_ - p["f"]], [x_, y_])),
    "quadratic": lambda p: (lambda r: max(r) if p["ask"] == "largest" else sum(v * v for v in r))(
        sympy.solve(x_**2 - p["s"] * x_ + p["p"], x_)),
    "lcm_gcd": lambda p: sympy.ilcm(p["a"], p["b"]) if p["kind"].startswith("least") else sympy.igcd(p["a"], p["b"]),
    "modpow": lambda p: (p["a"] ** p["k"]) % p["m"],
    "committee": lambda p: sum(1 for _ in itertools.combinations(range(p["n"]), p["k"])),
    "missing_value": lambda p: p["mean"] * p["count"] - sum(p["known"]),
    "speed": lambda p: sympy.Rational(p["distance"], p["t1"]) * p["t2"],
    "pipes": lambda p: 1 / (sympy.Rational(1, p["a"]) + sympy.Rational(1, p["b"])),
    "ages": lambda p: sympy.solve(p["k"] * x_ + x_ + 2 * p["n"] - p["total"], x_)[0],
    "polynomial_value": lambda p: p["a"] * p["x"] ** 2 + p["b"] * p["x"] + p["c"],
    "marbles": lambda p: sympy.Rational(sum(1 for a, b in itertools.permutations(range(p["r"] + p["b"]), 2)
                                            if a < p["r"] and b < p["r"]),
                                        (p["r"] + p["b"]) * (p["r"] + p["b"] - 1)),
}


def test_math_answers_match_independent_derivation():
  assert set(MATH_REFERENCE) == set(math_problems.TEMPLATES)
  rng, seen = make_rng("test-math"), collections.Counter()
  for _ in range(600):
    p = math_problems.generate(rng)
    name = p.extra["template"]
    seen[name] += 1
    _assert_params_in_text(p.prompt, p.extra["params"])
    if name == "arithmetic_series":
      assert ", ".join(map(str, p.extra["params"]["first_terms"])) in p.prompt
    assert _as_fraction(p.ground_truth) == Fraction(str(sympy.Rational(MATH_REFERENCE[name](p.extra["params"])))), p
  assert set(seen) == set(MATH_REFERENCE)


def test_math_answers_parse_with_math_verify(train):
  math_verify = pytest.importorskip("math_verify")
  for e in [e for e in train if e.domain == "math"][:60]:
    gold = math_verify.parse(f"${e.ground_truth}$", parsing_timeout=None)
    assert gold and math_verify.verify(gold, math_verify.parse(f"$\\boxed{{{e.ground_truth}}}$",
                                                               parsing_timeout=None), timeout_seconds=None)


# --------------------------------------------------------------------------------------------------- stem

STEM_REFERENCE = {
    "kinematics": lambda p: p["a"] * p["t"] if p["ask"] == "speed" else 0.5 * p["a"] * p["t"] ** 2,
    "ohm": lambda p: p["v"] / p["r"] if p["ask"] == "current" else p["v"] ** 2 / p["r"],
    "kinetic_energy": lambda p: 0.5 * p["m"] * p["v"] ** 2,
    "potential_energy": lambda p: p["m"] * 9.8 * p["h"],
    "density": lambda p: p["mass"] / p["vol"],
    "moles": lambda p: p["grams"] / {"H2O": 18, "CO2": 44, "NaCl": 58.5, "CH4": 16, "NH3": 17, "O2": 32,
                                     "C6H12O6": 180, "CaCO3": 100, "HCl": 36.5, "N2": 28}[p["compound"]],
    "molar_mass": lambda p: sum({"H": 1, "C": 12, "N": 14, "O": 16, "Na": 23, "Cl": 35.5, "S": 32, "Ca": 40,
                                 "K": 39}[e] * c for e, c in zip(p["elements"], p["counts"])),
    "ph": lambda p: -math.log10(10.0 ** -p["n"]),
    "wavelength": lambda p: p["v"] / p["f"],
    "collision": lambda p: p["m1"] * p["v1"] / (p["m1"] + p["m2"]),
    "boyle": lambda p: p["p1"] * p["v1"] / p["p2"],
    "heat": lambda p: p["m"] * 4.18 * p["dt"],
    "force": lambda p: p["m"] * p["a"],
    "half_life": lambda p: p["m0"] * 0.5 ** p["n"],
    "speed_convert": lambda p: p["kmh"] * 1000 / 3600,
    "product": lambda p: p["a"] * p["b"],
}


def test_stem_letters_point_at_the_right_value():
  assert set(STEM_REFERENCE) == set(stem_problems.TEMPLATES)
  rng, seen = make_rng("test-stem"), set()
  for _ in range(500):
    p = stem_problems.generate(rng)
    seen.add(p.extra["template"])
    _assert_params_in_text(p.prompt.split("\n\nA. ")[0], p.extra["params"], skip=("n", "counts"))
    options = re.findall(r"^([A-D])\. (.+)$", p.prompt, flags=re.M)
    assert [l for l, _ in options] == list("ABCD") and len({o for _, o in options}) == 4
    chosen = float(dict(options)[p.ground_truth])
    want = STEM_REFERENCE[p.extra["template"]](p.extra["params"])
    assert math.isclose(chosen, want, rel_tol=5e-3), (p.prompt, want)
    for letter, text in options:
      if letter != p.ground_truth:  # A wrong option may not read as the right value.
        assert float(text) != want if float(text).is_integer() and float(want).is_integer() else (
            not math.isclose(float(text), want, rel_tol=5e-3)), (p.prompt, want)
    if float(want).is_integer():
      assert dict(options)[p.ground_truth] == str(int(want))
  assert seen == set(STEM_REFERENCE)


# --------------------------------------------------------------------------------------------------- code

_HARNESS = r"""
import contextlib, io, json, sys
results = []
for task in json.load(sys.stdin):
  passed = 0
  for inp, out in zip(task["inputs"], task["outputs"]):
    ns, buf = {"__name__": "__main__"}, io.StringIO()
    old_stdin = sys.stdin
    try:
      if task["fn_name"]:
        exec(task["solution"], ns)
        got = json.loads(json.dumps(ns[task["fn_name"]](*inp)))
      else:
        sys.stdin = io.StringIO(inp)
        with contextlib.redirect_stdout(buf):
          exec(task["solution"], ns)
        got = buf.getvalue()
      passed += got == out
    finally:
      sys.stdin = old_stdin
  results.append(passed / len(task["inputs"]))
print(json.dumps(results))
"""


def test_reference_solutions_pass_their_tests_in_a_subprocess():
  rng, problems = make_rng("test-code"), []
  while len(problems) < 300:
    problems.append(code_problems.generate(rng))
  assert {p.extra["template"] for p in problems} == set(code_problems.TEMPLATES)
  assert len(code_problems.TEMPLATES) >= 20
  kinds = collections.Counter("call" if "fn_name" in p.ground_truth else "stdin" for p in problems)
  assert kinds["call"] > 50 and kinds["stdin"] > 50
  tasks = [{"solution": p.extra["reference_solution"], "fn_name": p.ground_truth.get("fn_name"),
            **json.loads(json.dumps({k: p.ground_truth[k] for k in ("inputs", "outputs")}))} for p in problems]
  out = subprocess.run([sys.executable, "-c", _HARNESS], input=json.dumps(tasks), capture_output=True, text=True,
                       timeout=120, check=True)
  scores = json.loads(out.stdout)
  failing = [(p.extra["template"], s) for p, s in zip(problems, scores) if s != 1.0]
  assert not failing
  # The harness can fail: a wrong expected output is caught.
  broken = dict(tasks[0], outputs=["wrong"] * len(tasks[0]["outputs"]))
  out = subprocess.run([sys.executable, "-c", _HARNESS], input=json.dumps([broken]), capture_output=True, text=True,
                       timeout=60, check=True)
  assert json.loads(out.stdout) == [0.0]


def test_code_prompt_shows_a_worked_example():
  rng = make_rng("test-code-prompt")
  for _ in range(50):
    p = code_problems.generate(rng)
    assert "Example" in p.prompt and len(p.ground_truth["inputs"]) == code_problems.NUM_TESTS


# --------------------------------------------------------------------------------------------------- logic

def test_logic_entries_score_one_after_file_round_trip(tmp_path):
  rg = pytest.importorskip("reasoning_gym")
  logic = embedded_dataset(120, seed=4, domains=("logic",))
  back = load_examples(save_examples(logic, tmp_path / "logic.parquet"))
  assert back == logic
  tasks = collections.Counter(e.ground_truth["task"] for e in back)
  assert len(tasks) >= 20
  for e in back:
    entry = e.ground_truth["entry"]
    assert e.prompt == entry["question"]
    assert rg.get_score_answer_fn(e.ground_truth["task"])(entry["answer"], entry) == 1.0
    assert rg.get_score_answer_fn(e.ground_truth["task"])("certainly wrong", entry) < 0.5


# --------------------------------------------------------------------------------------------------- ifeval

# Argument names of each IFEval instruction's build_description (google-research/instruction_following_eval).
IFEVAL_ARGS = {
    "keywords:existence": {"keywords"}, "keywords:frequency": {"keyword", "frequency", "relation"},
    "keywords:forbidden_words": {"forbidden_words"}, "keywords:letter_frequency": {"letter", "let_frequency",
                                                                                   "let_relation"},
    "length_constraints:number_words": {"num_words", "relation"},
    "length_constraints:number_sentences": {"num_sentences", "relation"},
    "length_constraints:number_paragraphs": {"num_paragraphs"},
    "length_constraints:nth_paragraph_first_word": {"num_paragraphs", "nth_paragraph", "first_word"},
    "detectable_format:number_bullet_lists": {"num_bullets"},
    "detectable_format:number_highlighted_sections": {"num_highlights"},
    "detectable_format:multiple_sections": {"section_spliter", "num_sections"}, "detectable_format:title": set(),
    "detectable_format:json_format": set(), "detectable_format:constrained_response": set(),
    "detectable_content:postscript": {"postscript_marker"},
    "detectable_content:number_placeholders": {"num_placeholders"}, "startend:end_checker": {"end_phrase"},
    "startend:quotation": set(), "change_case:english_lowercase": set(), "change_case:english_capital": set(),
    "punctuation:no_comma": set(), "combination:two_responses": set(), "combination:repeat_prompt":
        {"prompt_to_repeat"},
}


def test_ifeval_ground_truth_uses_ifeval_arguments():
  rng, seen = make_rng("test-ifeval"), set()
  for _ in range(1500):
    p = ifeval_prompts.generate(rng)
    ids, kwargs = p.ground_truth["instruction_id_list"], p.ground_truth["kwargs"]
    seen.update(ids)
    assert len(ids) == len(set(ids)) == len(kwargs) and 1 <= len(ids) <= 3
    for i, kw in zip(ids, kwargs):
      assert set(kw) == IFEVAL_ARGS[i], (i, kw)
      for rel in ("relation", "let_relation"):
        assert kw.get(rel, "at least") in ("at least", "less than")
      if i == "combination:repeat_prompt":
        assert p.prompt.startswith(kw["prompt_to_repeat"] + " First repeat the request")
    for a, b in itertools.combinations(ids, 2):
      assert not ifeval_prompts.conflicts(a, b), (a, b)
    words = set(p.ground_truth["kwargs"][ids.index("keywords:forbidden_words")]["forbidden_words"]
                ) if "keywords:forbidden_words" in ids else set()
    required = set(sum((kw.get("keywords", []) for kw in kwargs), []))
    assert not words & required
  assert seen == set(IFEVAL_ARGS)


def test_ifeval_conflict_rules():
  assert ifeval_prompts.conflicts("change_case:english_lowercase", "change_case:english_capital")
  assert ifeval_prompts.conflicts("detectable_format:number_bullet_lists", "length_constraints:number_paragraphs")
  assert ifeval_prompts.conflicts("detectable_format:json_format", "startend:quotation")
  assert not ifeval_prompts.conflicts("detectable_format:json_format", "keywords:existence")
  assert ifeval_prompts.conflicts("detectable_format:constrained_response", "keywords:existence")
  assert not ifeval_prompts.conflicts("punctuation:no_comma", "detectable_format:title")
