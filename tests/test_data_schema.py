"""Tests for the dataset schema (prorl_jax.data.schema) and the lossless JSON codec (prorl_jax.data.jsonio)."""

import decimal
import fractions
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prorl_jax.data import jsonio
from prorl_jax.data.schema import DataError, Example, normalize_domain

# ----------------------------------------------------------------------------------------------------- jsonio

_scalars = (st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False)
            | st.text(max_size=8) | st.fractions() | st.complex_numbers(allow_nan=False)
            | st.binary(max_size=8) | st.decimals(allow_nan=False, allow_infinity=False))
_hashables = st.recursive(st.integers() | st.text(max_size=5) | st.fractions(),
                          lambda c: st.tuples(c, c) | st.frozensets(c, max_size=3), max_leaves=6)
_values = st.recursive(
    _scalars | st.sets(_hashables, max_size=4),
    lambda c: (st.lists(c, max_size=4) | st.tuples(c, c) | st.dictionaries(st.text(max_size=5), c, max_size=4)
               | st.dictionaries(st.integers() | st.tuples(st.integers(), st.integers()), c, max_size=3)),
    max_leaves=20)


def _same(a, b):
  """Equality that also demands equal types (1 == 1.0 == True and [1] != (1,) must be told apart)."""
  if type(a) is not type(b):
    return False
  if isinstance(a, dict):
    return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
  if isinstance(a, (list, tuple)):
    return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
  if isinstance(a, decimal.Decimal):
    return a == b and str(a) == str(b)
  return a == b


@settings(max_examples=300, deadline=None)
@given(_values)
def test_jsonio_round_trip_is_exact(value):
  text = jsonio.dumps(value)
  json.loads(text)  # Plain JSON on disk.
  assert _same(jsonio.loads(text), value)


def test_jsonio_reasoning_gym_like_metadata():
  entry = {"question": "q", "answer": "3/4", "metadata": {"grid": ((1, 2), (3, 4)), "f": fractions.Fraction(3, 4),
                                                          "cells": {(0, 1): "x"}, "seen": {1, 2}, 7: "int key"}}
  back = jsonio.loads(jsonio.dumps(entry))
  assert back == entry and isinstance(back["metadata"]["grid"][0], tuple)
  assert isinstance(back["metadata"]["f"], fractions.Fraction)


def test_jsonio_numpy_and_plain_json():
  arr = np.arange(6, dtype=np.int16).reshape(2, 3)
  back = jsonio.loads(jsonio.dumps({"a": arr, "s": np.float32(0.5), "b": np.bool_(True)}))
  assert back["a"].dtype == np.int16 and np.array_equal(back["a"], arr)
  assert back["s"] == 0.5 and back["b"] is True
  # Untagged JSON written by any other tool decodes to itself.
  assert jsonio.loads('{"inputs": [[1, 2]], "outputs": [3]}') == {"inputs": [[1, 2]], "outputs": [3]}


def test_jsonio_rejects_unknown_types_with_path():
  with pytest.raises(TypeError, match=r"\$\.meta\.obj"):
    jsonio.dumps({"meta": {"obj": object()}})


# ----------------------------------------------------------------------------------------------------- schema

CODE_GT = {"inputs": ["1 2\n"], "outputs": ["3\n"]}
IFEVAL_GT = {"instruction_id_list": ["punctuation:no_comma", "length_constraints:number_words"],
             "kwargs": [{"num_words": None}, {"num_words": 50, "relation": "at least", "keywords": None}]}


@pytest.mark.parametrize("domain, truth, expected", [
    ("math", " \\frac{1}{2} ", "\\frac{1}{2}"),
    ("math", 42, "42"),
    ("stem", " b ", "B"),
    ("code", CODE_GT, CODE_GT),
    ("code", json.dumps({"fn_name": "f", "inputs": [[1, 2]], "outputs": [3]}),
     {"fn_name": "f", "inputs": [[1, 2]], "outputs": [3]}),
    ("logic", {"task": "chain_sum", "entry": {"question": "1+1", "answer": "2", "metadata": {}}},
     {"task": "chain_sum", "entry": {"question": "1+1", "answer": "2", "metadata": {}}}),
    ("ifeval", IFEVAL_GT, {"instruction_id_list": IFEVAL_GT["instruction_id_list"],
                           "kwargs": [{}, {"num_words": 50, "relation": "at least"}]}),
])
def test_ground_truth_is_canonicalised(domain, truth, expected):
  ex = Example(id="x", domain=domain, prompt="p", ground_truth=truth)
  assert ex.ground_truth == expected


@pytest.mark.parametrize("domain, truth, fragment", [
    ("math", None, "field 'ground_truth' is missing (domain 'math' needs the answer string)"),
    ("math", "  ", "is empty"),
    ("math", True, "has type bool"),
    ("stem", "AB", "not a single option letter"),
    ("stem", "\\boxed{A}", "for free-form STEM answers use domain 'math'"),
    ("code", {"inputs": ["1"]}, "lacks the 'inputs'/'outputs' lists"),
    ("code", {"inputs": ["1"], "outputs": []}, "has 1 inputs and 0 outputs"),
    ("code", {"fn_name": "f", "inputs": [1], "outputs": [1]}, "not an argument list"),
    ("code", {"fn_name": "not valid", "inputs": [[1]], "outputs": [1]}, "not a Python identifier"),
    ("code", {"inputs": [1], "outputs": [1]}, "set 'fn_name' for call-based tests"),
    ("code", "{not json", "not valid JSON"),
    ("logic", {"entry": {}}, "lacks the Reasoning Gym 'task' name"),
    ("logic", {"task": "x", "entry": "y"}, "lacks the 'entry' dict"),
    ("ifeval", {"instruction_id_list": ["a", "b"], "kwargs": [{}]}, "one 'kwargs' dict per instruction id"),
    ("ifeval", {"instruction_id_list": []}, "non-empty 'instruction_id_list'"),
])
def test_bad_ground_truth_names_field_and_fix(domain, truth, fragment):
  with pytest.raises(DataError) as info:
    Example(id="ex-1", domain=domain, prompt="p", ground_truth=truth)
  assert fragment in str(info.value) and str(info.value).startswith("example 'ex-1': field 'ground_truth'")


def test_test_program_ground_truths():
  humaneval = {"test": "def check(candidate):\n    assert candidate(1) == 2\n", "entry_point": "inc"}
  mbpp = {"assert_tests": ("assert inc(1) == 2", "assert inc(2) == 3"), "setup": "import math"}
  assert Example(id="h", domain="code", prompt="p", ground_truth=json.dumps(humaneval)).ground_truth == humaneval
  assert Example(id="m", domain="code", prompt="p", ground_truth=mbpp).ground_truth == {
      "assert_tests": ["assert inc(1) == 2", "assert inc(2) == 3"], "setup": "import math"}  # a list, as in files
  for truth, fragment in [({"test": "", "entry_point": "f"}, "lacks the 'test' source"),
                          ({"test": "def check(c): pass", "entry_point": "not a name"}, "not a Python identifier"),
                          ({"entry_point": "f"}, "lacks the 'test' source"),
                          ({"assert_tests": []}, "'assert_tests' that is not a non-empty list"),
                          ({"assert_tests": ["assert f()", 3]}, "'assert_tests' that is not a non-empty list"),
                          ({"assert_tests": ["assert f()"], "setup": ["import math"]}, "'setup' of type list")]:
    with pytest.raises(DataError) as info:
      Example(id="ex-2", domain="code", prompt="p", ground_truth=truth)
    assert fragment in str(info.value) and "'assert_tests': [STATEMENT, ...]" in str(info.value)


@pytest.mark.parametrize("kwargs, fragment", [
    ({"prompt": None}, "field 'prompt' and 'messages' are both missing"),
    ({"messages": [{"role": "user", "content": "hi"}]}, "are both set"),
    ({"prompt": ""}, "field 'prompt' is not a non-empty string"),
    ({"prompt": None, "messages": []}, "field 'messages' is not a non-empty list"),
    ({"prompt": None, "messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]},
     "ends with a 'assistant' turn"),
    ({"prompt": None, "messages": [{"role": "bot", "content": "a"}]}, "field 'messages[0]' has role 'bot'"),
    ({"prompt": None, "messages": [{"role": "user", "content": "a", "name": "x"}]}, "exactly 'role' and 'content'"),
    ({"domain": "chemistry"}, "field 'domain' is 'chemistry', which is not a known domain"),
    ({"id": ""}, "field 'id'"),
    ({"extra": [1]}, "field 'extra' has type list"),
])
def test_bad_fields_are_named(kwargs, fragment):
  fields = {"id": "e", "domain": "math", "prompt": "p", "ground_truth": "1", **kwargs}
  with pytest.raises(DataError, match=None) as info:
    Example(**fields)
  assert fragment in str(info.value)


def test_domain_aliases():
  assert normalize_domain("MATH") == "math"
  assert normalize_domain("instruction_following") == "ifeval"
  assert normalize_domain("reasoning_gym") == "logic"
  assert Example(id=3, domain="Coding", prompt="p", ground_truth=CODE_GT).domain == "code"


def test_row_round_trip_preserves_everything():
  entry = {"question": "q", "answer": "1", "metadata": {"t": (1, (2, 3)), "f": fractions.Fraction(1, 3)}}
  examples = [
      Example(id="m", domain="math", prompt="1+1?", ground_truth="2", extra={"level": 3, "tags": ("a", "b")}),
      Example(id="c", domain="code", messages=[{"role": "system", "content": "s"}, {"role": "user", "content": "u"}],
              ground_truth={"fn_name": "f", "inputs": [[1, [2]]], "outputs": [[3]]}),
      Example(id="l", domain="logic", prompt="q", ground_truth={"task": "chain_sum", "entry": entry}),
      Example(id="s", domain="stem", prompt="q", ground_truth="c"),
      Example(id="i", domain="ifeval", prompt="q", ground_truth=IFEVAL_GT),
  ]
  for ex in examples:
    row = ex.to_row()
    json.dumps(row)  # Rows are plain JSON.
    assert isinstance(row["ground_truth"], str) and isinstance(row["extra"], str)
    back = Example.from_row(json.loads(json.dumps(row)))
    assert back == ex
  assert isinstance(Example.from_row(examples[2].to_row()).ground_truth["entry"]["metadata"]["t"][1], tuple)


def test_from_row_locates_errors():
  with pytest.raises(DataError) as info:
    Example.from_row({"id": "a", "domain": "math", "prompt": "p"}, where="dataset 'foo.jsonl' row 17")
  assert str(info.value) == ("dataset 'foo.jsonl' row 17: field 'ground_truth' is missing (domain 'math' needs the "
                             "answer string)")
  with pytest.raises(DataError, match="row 2: field 'answer' is not a schema field"):
    Example.from_row({"id": "a", "domain": "math", "prompt": "p", "answer": "1"}, where="row 2")


def test_to_row_rejects_unencodable_extra():
  ex = Example(id="a", domain="math", prompt="p", ground_truth="1", extra={"obj": object()})
  with pytest.raises(DataError, match="example 'a': field 'extra'"):
    ex.to_row()
