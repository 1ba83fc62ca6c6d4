"""Tests for prorl_jax.data.sources: every benchmark and training loader on small rows written in the dataset's
real layout (jsonl / parquet / csv, since nothing can be downloaded), checked for domain, prompt and a ground truth
that the project's verifier accepts (the reference answer or solution scores 1.0, a wrong one 0.0)."""

import base64
import json
import pickle
import zlib

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from prorl_jax.data import DataError
from prorl_jax.data.embedded.common import derive_seed
from prorl_jax.data.sources import (BENCHMARKS, OOD_TASKS, PRORL_BENCHMARKS, TRAINING_SOURCES, heldout_seed,
                                    load_benchmark, load_source, load_training_source)
from prorl_jax.data.sources.choice_sources import LETTERS
from prorl_jax.rewards import score


def _jsonl(path, rows):
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  return path


def _parquet(path, rows):
  path.parent.mkdir(parents=True, exist_ok=True)
  pq.write_table(pa.Table.from_pylist(rows), path)
  return path


def _boxed(answer):
  return f"Working... so the final answer is \\boxed{{{answer}}}."


# ---- math ------------------------------------------------------------------------------------------------

def test_aime2024_h4_layout(tmp_path):
  rows = [{"id": 60, "problem": "Find the number of ... Find $m+n$.", "solution": "...", "answer": "204",
           "url": "https://artofproblemsolving.com/wiki/index.php/2024_AIME_I_Problems/Problem_1", "year": "2024"},
          {"id": 61, "problem": "Let $x$ ...", "solution": "...", "answer": "025", "url": "u", "year": "2024"}]
  examples = load_benchmark("aime2024", source=_jsonl(tmp_path / "aime.jsonl", rows))
  assert [e.id for e in examples] == ["aime2024/60", "aime2024/61"]
  e = examples[0]
  assert (e.domain, e.prompt, e.ground_truth) == ("math", rows[0]["problem"], "204")
  assert e.extra == {"benchmark": "aime2024", "year": "2024", "url": rows[0]["url"]}
  assert score("math", _boxed("204"), e.ground_truth) == 1.0 and score("math", _boxed("205"), e.ground_truth) == 0.0
  assert score("math", _boxed("25"), examples[1].ground_truth) == 1.0
  # datasets' to_json("x.json") writes JSON Lines under a .json name; a JSON list loads too.
  assert load_benchmark("aime2024", source=_jsonl(tmp_path / "lines.json", rows)) == examples
  (tmp_path / "list.json").write_text(json.dumps(rows))
  assert load_benchmark("aime2024", source=tmp_path / "list.json") == examples


def test_aime2025_two_configs_in_a_directory(tmp_path):
  _parquet(tmp_path / "AIME2025-I" / "test-00000.parquet", [{"question": "Find the sum ...", "answer": "70"}])
  _parquet(tmp_path / "AIME2025-II" / "test-00000.parquet", [{"question": "Six points ...", "answer": "468"}])
  examples = load_benchmark("aime2025", source=tmp_path)
  assert [(e.id, e.ground_truth) for e in examples] == [("aime2025/0", "70"), ("aime2025/1", "468")]
  assert all(e.extra["benchmark"] == "aime2025" for e in examples)


def test_amc_float_answers_become_integers(tmp_path):
  rows = [{"id": 0, "problem": "What is ...?", "answer": 142.0, "url": "u"},
          {"id": 1, "problem": "Compute ...", "answer": 0.5, "url": "u"}]
  examples = load_benchmark("amc", source=_parquet(tmp_path / "train-0.parquet", rows))
  assert [e.ground_truth for e in examples] == ["142", "0.5"]
  assert score("math", _boxed("142"), examples[0].ground_truth) == 1.0
  assert score("math", _boxed("\\frac{1}{2}"), examples[1].ground_truth) == 1.0


def test_math500_prefers_the_split_file_and_keeps_metadata(tmp_path):
  row = {"problem": "Convert the point $(0,3)$ ... polar coordinates.", "solution": "...",
         "answer": "\\left( 3, \\frac{\\pi}{2} \\right)", "subject": "Precalculus", "level": 2,
         "unique_id": "test/precalculus/807.json"}
  _jsonl(tmp_path / "test.jsonl", [row])
  _jsonl(tmp_path / "train.jsonl", [{"unrelated": 1}])
  (e,) = load_benchmark("math500", source=tmp_path)
  assert e.id == "math500/test/precalculus/807.json"
  assert e.extra == {"benchmark": "math500", "subject": "Precalculus", "level": 2}
  assert score("math", _boxed("(3, \\frac{\\pi}{2})"), e.ground_truth) == 1.0


def test_minerva_and_olympiadbench_layouts(tmp_path):
  (m,) = load_benchmark("minerva", source=[{"question": "Each of the two Magellan telescopes ...", "answer": "1.6"}])
  assert (m.prompt[:8], m.ground_truth) == ("Each of ", "1.6")
  rows = [{"id": 1606, "question": "Xenia and Sergey play ...", "solution": ["..."], "final_answer": ["2"],
           "context": None, "is_multiple_answer": False, "unit": None, "answer_type": "Numerical"},
          {"id": 1700, "question": "Find all $n$ ...", "solution": ["..."], "final_answer": ["$1$", "$3$"],
           "context": "", "is_multiple_answer": True, "unit": None, "answer_type": "Numerical"},
          {"id": 1800, "question": "Compute the ratio.", "solution": ["..."], "final_answer": ["$\\frac{1}{2}$"]}]
  a, b, c = load_benchmark("olympiadbench", source=_parquet(tmp_path / "ob.parquet", rows))
  assert (a.ground_truth, b.ground_truth, c.ground_truth) == ("2", "1, 3", "\\frac{1}{2}")
  assert b.extra["multiple_answers"] and a.extra["answer_type"] == "Numerical"
  assert score("math", _boxed("3, 1"), b.ground_truth) == 1.0 and score("math", _boxed("1"), b.ground_truth) == 0.0
  assert score("math", _boxed("0.5"), c.ground_truth) == 1.0


def test_missing_column_error_names_benchmark_row_and_columns(tmp_path):
  rows = [{"id": i, "problem": f"p{i}", "answer": str(i)} for i in range(5)]
  del rows[3]["answer"]
  path = _jsonl(tmp_path / "aime.jsonl", rows)
  with pytest.raises(DataError) as info:
    load_benchmark("aime2024", source=path)
  assert str(info.value) == (
      f"benchmark 'aime2024' ({path}, HuggingFaceH4/aime_2024 layout) row 3: field 'answer' is missing: the row has "
      "no value in column 'answer' (nor its alternatives ['final_answer', 'Answer']) (columns present: ['id', "
      "'problem']; expected the problem/question + answer layout)")


def test_solution_boxed_answer_is_a_fallback():
  (e,) = load_benchmark("minerva", source=[{"problem": "p", "solution": "... so $\\boxed{7}$ ..."}])
  assert e.ground_truth == "7" and e.extra["answer_from"] == "solution_boxed"


def test_hub_unreachable_is_a_clear_error():
  with pytest.raises(DataError, match=r"benchmark 'math500' \(HuggingFaceH4/MATH-500\).*could not be loaded.*source="):
    load_benchmark("math500")


def test_deepscaler_and_scp116k(tmp_path):
  (d,) = load_training_source("deepscaler", source=[{"problem": "Compute $2+2$.", "answer": "4", "solution": "4"}])
  assert (d.id, d.domain, d.ground_truth, d.extra) == ("deepscaler/0", "math", "4", {"source": "deepscaler"})
  rows = [
      {"domain": "Physics", "problem": "A car ...", "matched_solution": "... $v = \\boxed{5}$ m/s",
       "o1_solution": "v = \\boxed{5 \\text{ m/s}}", "is_o1_solution_same_with_matched_solution": True,
       "qwq_solution": "...", "is_qwq_solution_same_with_matched_solution": False},
      {"domain": "Chemistry", "problem": "Find the energy ...", "matched_solution": "The energy is 13.6 eV.",
       "o1_solution": "E = \\boxed{13.6}", "is_o1_solution_same_with_matched_solution": True,
       "qwq_solution": "\\boxed{13.5}", "is_qwq_solution_same_with_matched_solution": False},
      {"domain": "Biology", "problem": "Why ...?", "matched_solution": "Because.", "o1_solution": "\\boxed{x}",
       "is_o1_solution_same_with_matched_solution": False, "qwq_solution": "\\boxed{y}",
       "is_qwq_solution_same_with_matched_solution": False},
      {"domain": "Physics", "problem": "Explain ...", "matched_solution": "Text only.", "o1_solution": "Text.",
       "is_o1_solution_same_with_matched_solution": True, "qwq_solution": "Text.",
       "is_qwq_solution_same_with_matched_solution": True}]
  a, b = load_training_source("scp116k", source=_parquet(tmp_path / "scp.parquet", rows))
  assert (a.ground_truth, a.extra["answer_from"], a.extra["subject"]) == ("5", "matched_solution", "Physics")
  assert (b.ground_truth, b.extra["answer_from"], b.extra["prorl_domain"]) == ("13.6", "o1_solution", "stem")
  assert b.domain == "math" and score("math", _boxed("13.6"), b.ground_truth) == 1.0


# ---- multiple choice ----------------------------------------------------------------------------------------

def _gpqa_rows(n):
  return [{"Record ID": f"rec{i:03d}", "Question": f"Question {i}: which compound ...?",
           "Correct Answer": f"right {i}", "Incorrect Answer 1": f"wrong a{i}", "Incorrect Answer 2": f"wrong b{i}",
           "Incorrect Answer 3": f"wrong c{i}", "Subdomain": "Organic Chemistry", "High-level domain": "Chemistry",
           "Explanation": "..."} for i in range(n)]


def _csv(path, rows):
  import csv  # pylint: disable=g-import-not-at-top
  with open(path, "w", newline="", encoding="utf-8") as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
  return path


def test_gpqa_options_are_shuffled_deterministically(tmp_path):
  path = _csv(tmp_path / "gpqa_diamond.csv", _gpqa_rows(24))
  examples = load_benchmark("gpqa_diamond", source=path)
  again = load_benchmark("gpqa_diamond", source=tmp_path)
  assert examples == again
  for i, e in enumerate(examples):
    assert e.domain == "stem" and e.id == f"gpqa_diamond/rec{i:03d}"
    options = e.extra["options"]
    assert sorted(options) == sorted([f"right {i}", f"wrong a{i}", f"wrong b{i}", f"wrong c{i}"])
    assert options[LETTERS.index(e.ground_truth)] == f"right {i}"
    for letter, text in zip(LETTERS, options):
      assert f"\n{letter}) {text}" in e.prompt
  letters = [e.ground_truth for e in examples]
  assert len(set(letters)) == 4 and max(map(letters.count, LETTERS)) <= 12  # not stuck on one letter
  e = examples[0]
  wrong = next(x for x in LETTERS if x != e.ground_truth)
  assert score("stem", _boxed(e.ground_truth), e.ground_truth) == 1.0
  assert score("stem", _boxed(wrong), e.ground_truth) == 0.0


def test_gpqa_prorl_subset_joins_options_by_record_id(tmp_path):
  options = _csv(tmp_path / "gpqa_diamond.csv", _gpqa_rows(6))
  subset = [{"record_id": "rec004", "question": "Question 4: which compound ...?", "correct_answer": "right 4",
             "correct_explanation": "...", "metadata": {"difficulty": "hard"}},
            {"record_id": "rec001", "question": "Question 1: which compound ...?", "correct_answer": "right 1",
             "correct_explanation": "...", "metadata": {"difficulty": "hard"}}]
  examples = load_benchmark("gpqa_diamond_prorl", source=_jsonl(tmp_path / "sub.jsonl", subset),
                            options_source=options)
  full = {e.id.split("/")[1]: e for e in load_benchmark("gpqa_diamond", source=options)}
  assert [e.id for e in examples] == ["gpqa_diamond_prorl/rec004", "gpqa_diamond_prorl/rec001"]
  for e in examples:
    twin = full[e.id.split("/")[1]]
    assert (e.prompt, e.ground_truth) == (twin.prompt, twin.ground_truth)
  subset[0]["record_id"] = "rec999"
  with pytest.raises(DataError, match="'rec999' is not among the 6 rows"):
    load_benchmark("gpqa_diamond_prorl", source=subset, options_source=options)


# ---- instruction following ------------------------------------------------------------------------------------

_NONE_KWARGS = {"num_highlights": None, "relation": None, "num_words": None, "keywords": None}


def test_ifeval_google_layout(tmp_path):
  rows = [{"key": 1000, "prompt": "Write a haiku about rain, all lowercase, no commas.",
           "instruction_id_list": ["punctuation:no_comma", "change_case:english_lowercase"],
           "kwargs": [dict(_NONE_KWARGS), dict(_NONE_KWARGS)]},
          {"key": 1001, "prompt": "Write at least 5 words.", "instruction_id_list": ["length_constraints:number_words"],
           "kwargs": [{**_NONE_KWARGS, "relation": "at least", "num_words": 5}]}]
  a, b = load_benchmark("ifeval", source=_parquet(tmp_path / "ifeval.parquet", rows))
  assert (a.id, a.domain) == ("ifeval/1000", "ifeval")
  assert a.ground_truth["kwargs"] == [{}, {}] and b.ground_truth["kwargs"] == [{"relation": "at least",
                                                                               "num_words": 5}]
  assert score("ifeval", "soft rain on the roof\nthe garden drinks", a.ground_truth) == 1.0
  assert score("ifeval", "Soft rain, on the roof", a.ground_truth) == 0.0
  assert score("ifeval", "one two three four five six", b.ground_truth) == 1.0


def test_ifeval_train_accepts_top_level_or_nested_constraints():
  truth = {"instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]}
  rows = [{"prompt": "Say hi without commas.", **truth},
          {"input": [{"role": "system", "content": "detailed thinking on"}, {"role": "user", "content": "Hi."}],
           "args": json.dumps(truth), "uuid": "u-1"},
          {"prompt": "x", "instruction_id_list": ["made_up:thing"], "kwargs": [{}]}]
  a, b = load_training_source("ifeval_train", source=rows)
  assert a.prompt == "Say hi without commas." and a.ground_truth == truth
  assert b.id == "ifeval_train/u-1" and b.messages == [{"role": "user", "content": "Hi."}]
  assert score("ifeval", "hi there", b.ground_truth) == 1.0
  with pytest.raises(DataError, match="instruction_id_list' is missing"):
    load_training_source("ifeval_train", source=[{"prompt": "x"}])


# ---- code ---------------------------------------------------------------------------------------------------

_CHECK = '''import numpy as np

def assertion(out, exp, atol):
    exact_match = out == exp
    if not exact_match and atol != 0:
        np.testing.assert_allclose(out, exp, atol=atol)
    else:
        assert exact_match


def check(candidate):
    inputs = {inputs}
    {out_name} = {outputs}
    for i, (inp, exp) in enumerate(zip(inputs, {out_name})):
        {assertion}
'''


def _humaneval_row(task, entry, prompt, solution, inputs, outputs, out_name="results", atol=0, assertion=None):
  test = _CHECK.format(inputs=repr(inputs), outputs=repr(outputs), out_name=out_name,
                       assertion=assertion or f"assertion(candidate(*inp), exp, {atol})")
  return {"task_id": task, "prompt": prompt, "canonical_solution": solution, "entry_point": entry, "test": test}


_SUM_PRODUCT = _humaneval_row(
    "HumanEval/8", "sum_product",
    "from typing import List, Tuple\n\n\ndef sum_product(numbers: List[int]) -> Tuple[int, int]:\n"
    "    \"\"\" Sum and product of a list.\n    >>> sum_product([1, 2, 3, 4])\n    (10, 24)\n    \"\"\"\n",
    "    s, p = 0, 1\n    for n in numbers:\n        s += n\n        p *= n\n    return s, p\n",
    [[[]], [[1, 1, 1]], [[100, 0]], [[3, 5, 7]], [[10]]], [(0, 1), (3, 1), (100, 0), (15, 105), (10, 10)])


def test_humaneval_plus_call_based_tests(tmp_path):
  mad = _humaneval_row("HumanEval/4", "mean_absolute_deviation", "def mean_absolute_deviation(numbers):\n", "",
                       [[[1.0, 2.0, 3.0, 4.0]]], [1.0], out_name="exp_out", atol=1e-4)
  zero = _humaneval_row("HumanEval/32", "find_zero", "def find_zero(xs):\n", "", [[[1, 2]]], [-0.5],
                        out_name="exp_out", assertion="assert _poly(*candidate(*inp), inp) <= 0.0001")
  s, m, z = load_benchmark("humaneval_plus", source=_jsonl(tmp_path / "hep.jsonl", [_SUM_PRODUCT, mad, zero]))
  assert (s.id, s.domain) == ("humaneval_plus/HumanEval_8", "code")
  assert s.ground_truth == {"fn_name": "sum_product", "inputs": [[[]], [[1, 1, 1]], [[100, 0]], [[3, 5, 7]], [[10]]],
                            "outputs": [[0, 1], [3, 1], [100, 0], [15, 105], [10, 10]]}  # tuples in JSON form
  assert "```python\nfrom typing import List, Tuple" in s.prompt and s.extra["num_tests"] == 5
  assert m.ground_truth["atol"] == 1e-4 and "oracle" not in m.extra and z.extra["oracle"] == "special"
  assert z.ground_truth["atol"] == 1e-6 and "atol" not in s.ground_truth  # float outputs default to 1e-6
  canonical = f"```python\n{_SUM_PRODUCT['prompt']}{_SUM_PRODUCT['canonical_solution']}```"
  assert score("code", canonical, s.ground_truth) == 1.0
  assert score("code", "```python\ndef sum_product(numbers):\n    return sum(numbers), 0\n```",
               s.ground_truth) == pytest.approx(0.2)
  (short,) = load_benchmark("humaneval_plus", source=[_SUM_PRODUCT], max_tests=2)
  assert len(short.ground_truth["inputs"]) == 2 and short.ground_truth["inputs"][0] == [[]]
  with pytest.raises(DataError, match="not 'inputs' and 'results'"):
    load_benchmark("humaneval_plus", source=[{**_SUM_PRODUCT, "test": "def check(candidate):\n    assert 1\n"}])


def _lcb_blob(tests):
  return base64.b64encode(zlib.compress(pickle.dumps(json.dumps(tests)))).decode()


def _lcb_row(qid, tests, private, testtype, func_name=None, starter="", date="2024-09-01T00:00:00"):
  return {"question_title": qid, "question_content": f"Problem {qid}.", "platform": "atcoder", "question_id": qid,
          "contest_id": "abc370", "contest_date": date, "starter_code": starter, "difficulty": "easy",
          "public_test_cases": json.dumps([dict(t, testtype=testtype) for t in tests]),
          "private_test_cases": _lcb_blob([dict(t, testtype=testtype) for t in private]),
          "metadata": json.dumps({"func_name": func_name} if func_name else {})}


class _Evil:
  def __reduce__(self):
    return (print, ("unpickled code ran",))


def test_livecodebench_stdin_and_functional(tmp_path):
  stdin = _lcb_row("abc370_a", [{"input": "1 2\n", "output": "3\n"}], [{"input": "10 5\n", "output": "15\n"}],
                   "stdin")
  func = _lcb_row("3500", [{"input": "1\n2", "output": "3"}], [{"input": "[1, 2]\n[3]", "output": "[1, 2, 3]"}],
                  "functional", func_name="addTwo", date="2025-03-01T00:00:00",
                  starter="class Solution:\n    def addTwo(self, a, b):\n        ")
  a, b = load_benchmark("livecodebench", source=_jsonl(tmp_path / "test5.jsonl", [stdin, func]))
  assert a.ground_truth == {"inputs": ["1 2\n", "10 5\n"], "outputs": ["3\n", "15\n"]}
  assert b.ground_truth == {"fn_name": "addTwo", "inputs": [[1, 2], [[1, 2], [3]]], "outputs": ["3", "[1, 2, 3]"]}
  assert "stdin" in a.prompt and "class Solution:" in b.prompt and b.extra["platform"] == "atcoder"
  assert score("code", "```python\na, b = map(int, input().split())\nprint(a + b)\n```", a.ground_truth) == 1.0
  solution = "```python\nclass Solution:\n    def addTwo(self, a, b):\n        return a + b\n```"
  assert score("code", solution, b.ground_truth) == 1.0
  _jsonl(tmp_path / "repo" / "test.jsonl", [stdin])
  _jsonl(tmp_path / "repo" / "test2.jsonl", [func])
  assert len(load_benchmark("livecodebench", source=tmp_path / "repo", version="release_v1")) == 1
  assert len(load_benchmark("livecodebench", source=tmp_path / "repo", version="release_v2")) == 2
  window = load_benchmark("livecodebench", source=[stdin, func], start_date="2024-08-01", end_date="2025-02-01")
  assert [e.id for e in window] == ["livecodebench/abc370_a"]
  evil = dict(stdin, private_test_cases=base64.b64encode(zlib.compress(pickle.dumps(_Evil()))).decode())
  with pytest.raises(DataError, match="private_test_cases.*UnpicklingError"):
    load_benchmark("livecodebench", source=[evil])
  with pytest.raises(ValueError, match="release_v5"):
    load_benchmark("livecodebench", version="latest")


_SYSTEM = "When tackling complex reasoning tasks, you have access to the following actions. [ASSESS] ..."
_CODE_SUFFIX = ("\n\nWrite Python code to solve the problem. Present the code in \n```python\nYour code\n```\n"
                "at the end.")


def _eurus_row(index, ability, truth, text):
  return {"data_source": "codecontests" if ability == "code" else "numina_olympiads",
          "prompt": [{"role": "system", "content": _SYSTEM}, {"role": "user", "content": text}],
          "ability": ability, "reward_model": {"style": "rule", "ground_truth": truth},
          "extra_info": {"split": "train", "index": index}}


def test_eurus2_code_and_prime_validation(tmp_path):
  rows = [_eurus_row(7, "code", json.dumps({"inputs": ["3\n", "5\n"], "outputs": ["6\n", "10\n"]}),
                     "Read n and print 2n." + _CODE_SUFFIX),
          _eurus_row(8, "math", "4", "Compute 2+2.\n\nPresent the answer in LaTex format: \\boxed{Your answer}"),
          _eurus_row(9, "code", json.dumps({"fn_name": "add", "inputs": ["1\n2", "[1, 2]\n[3]"],
                                            "outputs": ["3", "[1, 2, 3]"]}), "Write add(a, b)." + _CODE_SUFFIX)]
  path = _parquet(tmp_path / "train.parquet", rows)
  a, c = load_training_source("eurus2_code", source=path)
  assert (a.id, a.domain, a.extra) == ("eurus2_code/7", "code", {"source": "eurus2_code",
                                                                  "data_source": "codecontests", "ability": "code"})
  assert a.messages == [{"role": "user", "content": rows[0]["prompt"][1]["content"]}]  # PRIME system prompt dropped
  assert c.ground_truth["inputs"] == [[1, 2], [[1, 2], [3]]] and c.ground_truth["outputs"] == ["3", "[1, 2, 3]"]
  assert score("code", "```python\nn = int(input())\nprint(2 * n)\n```", a.ground_truth) == 1.0
  assert score("code", "```python\ndef add(a, b):\n    return a + b\n```", c.ground_truth) == 1.0
  both = load_training_source("eurus2_code", source=path, abilities=("code", "math"), keep_system_prompt=True)
  assert [e.domain for e in both] == ["code", "math", "code"] and both[1].ground_truth == "4"
  assert both[0].messages[0]["role"] == "system"
  (v, _) = load_benchmark("prime_code_val", source=path)
  assert v.extra["benchmark"] == "prime_code_val" and v.id == "prime_code_val/7"


def test_eurus2_malformed_rows_and_line_lists():
  lines = _eurus_row(1, "code", json.dumps({"inputs": [["2", "3 4"]], "outputs": [["7"]]}), "Sum." + _CODE_SUFFIX)
  bad = _eurus_row(2, "code", json.dumps({"inputs": ["1\n"], "outputs": []}), "Broken." + _CODE_SUFFIX)
  (a,) = load_training_source("eurus2_code", source=[lines])
  assert a.ground_truth == {"inputs": ["2\n3 4"], "outputs": ["7"]}
  with pytest.raises(DataError, match="row 1: field 'ground_truth' has 1 inputs and 0 outputs"):
    load_training_source("eurus2_code", source=[lines, bad])
  kept = load_training_source("eurus2_code", source=[lines, bad, lines], skip_invalid=True)
  assert [e.id for e in kept] == ["eurus2_code/1", "eurus2_code/1#row2"]
  with pytest.raises(ValueError, match=r"unknown options \['skip_invalid'\]"):  # benchmarks are loaded whole
    load_benchmark("prime_code_val", source=[lines], skip_invalid=True)
  with pytest.raises(ValueError, match="benchmark 'prime_code_val' cannot skip"):
    load_source(BENCHMARKS["prime_code_val"], source=[lines], skip_invalid=True)


# ---- logic --------------------------------------------------------------------------------------------------

def test_reasoning_gym_heldout_is_disjoint_from_training():
  tasks = ("basic_arithmetic", "leg_counting")
  held = load_benchmark("reasoning_gym", tasks=tasks, per_task=4)
  assert [e.id for e in held][:4] == [f"reasoning_gym/basic_arithmetic/{i}" for i in range(4)] and len(held) == 8
  for e in held:
    task = e.ground_truth["task"]
    assert e.domain == "logic" and e.extra["seed"] == heldout_seed(task, 0)
    assert e.extra["seed"] != derive_seed("reasoning_gym", 0, task)
    answer = e.ground_truth["entry"]["answer"]
    assert score("logic", f"<answer>{answer}</answer>", e.ground_truth) == 1.0
  train = load_training_source("reasoning_gym", tasks=tasks, size=60)
  assert len(train) == 60 and all(t.extra["source"] == "reasoning_gym" for t in train)
  assert not {e.prompt for e in held} & {t.prompt for t in train}
  skipped = load_benchmark("reasoning_gym", tasks=tasks[:1], per_task=4, exclude_prompts=[held[0].prompt])
  assert held[0].prompt not in {e.prompt for e in skipped} and len(skipped) == 4
  assert BENCHMARKS["reasoning_gym_ood"].defaults["tasks"] == OOD_TASKS


def test_reasoning_gym_skips_indices_that_fail_to_generate(monkeypatch):
  import reasoning_gym  # pylint: disable=g-import-not-at-top
  real = reasoning_gym.create_dataset

  class Flaky:
    def __init__(self, *args, **kwargs):
      self.inner = real(*args, **kwargs)

    def __len__(self):
      return len(self.inner)

    def __getitem__(self, index):
      if index == 1:
        raise RuntimeError("Could not find suitable path cell after 1000 attempts")  # as maze does
      return self.inner[index]

  monkeypatch.setattr(reasoning_gym, "create_dataset", Flaky)
  held = load_benchmark("reasoning_gym", tasks=("chain_sum",), per_task=3)
  assert [e.id for e in held] == [f"reasoning_gym/chain_sum/{i}" for i in (0, 2, 3)]


def test_reasoning_gym_local_dump(tmp_path):
  import reasoning_gym  # pylint: disable=g-import-not-at-top
  ds = reasoning_gym.create_dataset("chain_sum", size=2, seed=5)
  rows = [dict(ds[i]) for i in range(2)]
  examples = load_benchmark("reasoning_gym", source=_jsonl(tmp_path / "rg.jsonl", rows))
  assert [e.ground_truth["task"] for e in examples] == ["chain_sum", "chain_sum"]
  assert score("logic", f"<answer>{rows[1]['answer']}</answer>", examples[1].ground_truth) == 1.0


# ---- registry -----------------------------------------------------------------------------------------------

def test_registry_is_complete_and_options_are_checked():
  assert set(PRORL_BENCHMARKS) <= set(BENCHMARKS)
  assert set(TRAINING_SOURCES) == {"deepscaler", "eurus2_code", "scp116k", "reasoning_gym", "ifeval_train",
                                   "humaneval", "mbpp", "mbpp_sanitized"}
  for spec in list(BENCHMARKS.values()) + list(TRAINING_SOURCES.values()):
    assert spec.hub is not None or spec.rows is not None or spec.hub_for is not None, spec.name
  with pytest.raises(ValueError, match="unknown benchmark 'aime2023'.*aime2024"):
    load_benchmark("aime2023")
  with pytest.raises(ValueError, match=r"unknown options \['per_task'\].*max_tests=None"):
    load_benchmark("humaneval_plus", per_task=3)
  rows = [{"problem": f"p{i}", "answer": str(i)} for i in range(5)]
  assert [e.id for e in load_benchmark("minerva", source=rows, limit=2)] == ["minerva/0", "minerva/1"]
  with pytest.raises(DataError, match="repeats row 0"):
    load_benchmark("aime2024", source=[{"id": 1, "problem": "a", "answer": "1"}] * 2)
  with pytest.raises(DataError, match="does not exist"):
    load_benchmark("aime2024", source="/nonexistent/aime.jsonl")
