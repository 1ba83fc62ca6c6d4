"""Tests for prorl_jax.data.loaders: local files, directories, column maps, hub errors, save/load round trips."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from prorl_jax.data import DataError, Example, embedded_dataset, load_examples, register_column_map, save_examples
from prorl_jax.data.loaders import COLUMN_MAPS


def _write_jsonl(path, rows):
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  return path


def _math_rows(n):
  return [{"id": f"m{i}", "domain": "math", "prompt": f"What is {i} + {i}?", "ground_truth": str(2 * i)}
          for i in range(n)]


@pytest.fixture(scope="module")
def mixed_examples():
  return embedded_dataset(40, seed=3, domains=("math", "code", "stem", "ifeval", "logic"))


@pytest.mark.parametrize("suffix", ["jsonl", "parquet"])
def test_save_load_round_trip(tmp_path, mixed_examples, suffix):
  path = save_examples(mixed_examples, tmp_path / "sub" / f"data.{suffix}")
  back = load_examples(path)
  assert back == mixed_examples
  assert load_examples(path, limit=7) == mixed_examples[:7]


def test_parquet_file_is_plain_columns(tmp_path, mixed_examples):
  path = save_examples(mixed_examples, tmp_path / "d.parquet")
  table = pq.read_table(path)
  assert table.column_names == ["id", "domain", "prompt", "messages", "ground_truth", "extra"]
  assert table.schema.field("ground_truth").type == pa.string()


def test_json_list_and_wrapped_list(tmp_path):
  rows = _math_rows(3)
  (tmp_path / "a.json").write_text(json.dumps(rows))
  (tmp_path / "b.json").write_text(json.dumps({"data": rows}))
  assert [e.id for e in load_examples(tmp_path / "a.json")] == ["m0", "m1", "m2"]
  assert load_examples(tmp_path / "b.json") == load_examples(tmp_path / "a.json")


def test_malformed_row_names_dataset_row_and_field(tmp_path):
  rows = _math_rows(20)
  del rows[17]["ground_truth"]
  path = _write_jsonl(tmp_path / "foo.jsonl", rows)
  with pytest.raises(DataError) as info:
    load_examples(path)
  assert str(info.value) == ("dataset 'foo.jsonl' row 17: field 'ground_truth' is missing (domain 'math' needs the "
                             "answer string)")


def test_bad_json_line_and_bad_domain(tmp_path):
  path = tmp_path / "bad.jsonl"
  path.write_text(json.dumps(_math_rows(1)[0]) + "\n\n{oops\n")
  with pytest.raises(DataError, match=r"dataset 'bad.jsonl' row 1: field '<row>' is not valid JSON .*line 3"):
    load_examples(path)
  rows = _math_rows(2)
  rows[1]["domain"] = "poetry"
  with pytest.raises(DataError, match=r"row 1: field 'domain' is 'poetry'"):
    load_examples(_write_jsonl(tmp_path / "d.jsonl", rows))


def test_wrong_ground_truth_type_in_parquet(tmp_path):
  rows = [{"id": "c0", "domain": "code", "prompt": "p", "ground_truth": "[1, 2]"}]
  pq.write_table(pa.Table.from_pylist(rows), tmp_path / "c.parquet")
  with pytest.raises(DataError, match=r"dataset 'c.parquet' row 0: field 'ground_truth' has type list, expected a"):
    load_examples(tmp_path / "c.parquet")


def test_directory_prefers_split_files(tmp_path):
  root = tmp_path / "ds"
  (root / "data").mkdir(parents=True)
  save_examples([Example.from_row(r) for r in _math_rows(4)], root / "data" / "train-00000-of-00001.parquet")
  save_examples([Example.from_row(r) for r in _math_rows(2)], root / "data" / "test-00000-of-00001.parquet")
  assert len(load_examples(root)) == 4
  assert len(load_examples(root, split="test")) == 2
  with pytest.raises(DataError, match=r"split.*'validation' has no files .*\['test', 'train'\]"):
    load_examples(root, split="validation")
  flat = tmp_path / "flat"
  save_examples([Example.from_row(r) for r in _math_rows(3)], flat / "part-a.jsonl")
  save_examples([Example.from_row(r) for r in _math_rows(2)], flat / "part-b.parquet")
  assert len(load_examples(flat, split="validation")) == 5  # No split names: every file.


def test_saved_hf_dataset_directory(tmp_path):
  datasets = pytest.importorskip("datasets")
  dd = datasets.DatasetDict({"train": datasets.Dataset.from_list(
      [{"problem": "1+1?", "answer": "2"}, {"problem": "2+2?", "answer": "4"}])})
  dd.save_to_disk(str(tmp_path / "saved"))
  ex = load_examples(tmp_path / "saved", column_map="problem_answer", domain="math")
  assert [(e.prompt, e.ground_truth) for e in ex] == [("1+1?", "2"), ("2+2?", "4")]
  with pytest.raises(DataError, match="split.*'validation' is not in"):
    load_examples(tmp_path / "saved", split="validation", column_map="problem_answer", domain="math")


def test_verl_layout_is_detected():
  rows = [{"data_source": "eurus", "ability": "code",
           "prompt": [{"role": "system", "content": "sys"}, {"role": "user", "content": "Write f."}],
           "reward_model": {"style": "rule", "ground_truth": json.dumps({"fn_name": "f", "inputs": [[1]],
                                                                          "outputs": [2]})},
           "extra_info": {"index": 5, "split": "train"}},
          {"data_source": "numina", "ability": "MATH", "prompt": [{"role": "user", "content": "1+1?"}],
           "reward_model": {"style": "rule", "ground_truth": "2"}, "extra_info": {"index": 6}}]
  code, math = load_examples(rows)
  assert code.domain == "code" and code.id == "5" and code.ground_truth["fn_name"] == "f"
  assert code.messages[0] == {"role": "system", "content": "sys"} and code.extra == {"data_source": "eurus"}
  assert math.domain == "math" and math.ground_truth == "2" and math.text == "1+1?"


def test_ifeval_column_map_drops_none_kwargs():
  rows = [{"key": 1000, "prompt": "Write a poem.", "instruction_id_list": ["punctuation:no_comma",
                                                                          "length_constraints:number_words"],
           "kwargs": [{"num_words": None, "relation": None}, {"num_words": 40, "relation": "less than"}]}]
  (ex,) = load_examples(rows, column_map="ifeval", domain="ifeval")
  assert ex.id == "1000"
  assert ex.ground_truth == {"instruction_id_list": ["punctuation:no_comma", "length_constraints:number_words"],
                             "kwargs": [{}, {"num_words": 40, "relation": "less than"}]}
  assert "prompt" not in ex.extra and ex.extra["instruction_id_list"]  # Unmapped columns are kept.


def test_reasoning_gym_rows_score_after_loading():
  rg = pytest.importorskip("reasoning_gym")
  ds = rg.create_dataset("gsm_symbolic", size=3, seed=11)
  rows = [dict(ds[i]) for i in range(3)]
  for ex, row in zip(load_examples(rows, column_map="reasoning_gym", domain="logic"), rows):
    assert ex.ground_truth["task"] == "gsm_symbolic"
    assert rg.get_score_answer_fn("gsm_symbolic")(row["answer"], ex.ground_truth["entry"]) == 1.0


def test_callable_and_dotted_column_maps_and_errors():
  rows = [{"q": {"text": "2*3?"}, "sol": {"final": 6}, "lvl": 2}]
  (ex,) = load_examples(rows, column_map={"prompt": "q.text", "ground_truth": lambda r: r["sol"]["final"]},
                        domain="math")
  assert (ex.prompt, ex.ground_truth, ex.extra) == ("2*3?", "6", {"sol": {"final": 6}, "lvl": 2})
  with pytest.raises(DataError, match=r"row 0: field 'prompt' is missing: the row has no column 'question'"):
    load_examples(rows, column_map={"prompt": "question", "ground_truth": "sol.final"}, domain="math")
  with pytest.raises(DataError, match=r"row 0: field 'ground_truth' could not be computed .*ZeroDivisionError"):
    load_examples(rows, column_map={"prompt": "q.text", "ground_truth": lambda r: 1 / 0}, domain="math")
  with pytest.raises(DataError, match=r"row 0: field 'domain' is missing \(pass domain="):
    load_examples(rows, column_map={"prompt": "q.text", "ground_truth": "sol.final"})
  with pytest.raises(DataError, match=r"do not match a known layout"):
    load_examples(rows)


def test_register_column_map():
  register_column_map("test_qa", {"prompt": "question", "ground_truth": "gold"}, overwrite=True)
  try:
    (ex,) = load_examples([{"question": "Pick.", "gold": "c"}], column_map="test_qa", domain="stem")
    assert ex.ground_truth == "C"
    with pytest.raises(ValueError, match="already exists"):
      register_column_map("test_qa", {"prompt": "q"})
    with pytest.raises(ValueError, match="unknown schema fields"):
      register_column_map("bad_map", {"answer": "a"})
  finally:
    COLUMN_MAPS.pop("test_qa", None)


def test_missing_paths_and_offline_hub(tmp_path, monkeypatch):
  with pytest.raises(DataError, match="does not exist"):
    load_examples(tmp_path / "nope.jsonl")
  with pytest.raises(DataError, match="holds no .jsonl/.json/.parquet files"):
    load_examples(tmp_path)
  monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
  monkeypatch.setenv("HF_HUB_OFFLINE", "1")
  with pytest.raises(DataError) as info:
    load_examples("some-org/some-dataset-that-is-not-cached")
  text = str(info.value)
  assert "could not be loaded from the Hugging Face Hub: offline mode is on" in text
  assert "to_parquet" in text and "pass the local path" in text


def test_save_rejects_unknown_suffix(tmp_path):
  with pytest.raises(ValueError, match="use a .jsonl or .parquet"):
    save_examples([], tmp_path / "x.csv")


def test_command_line_embedded_and_check(tmp_path, capsys):
  from prorl_jax.data.__main__ import main  # pylint: disable=g-import-not-at-top
  out = tmp_path / "emb.jsonl"
  assert main(["embedded", "--size", "30", "--seed", "2", "--domains", "math,stem", "--out", str(out)]) == 0
  assert load_examples(out) == embedded_dataset(30, seed=2, domains=("math", "stem"))
  capsys.readouterr()
  assert main(["check", str(out), "--tokenizer", "byte", "--max-prompt-length", "10"]) == 0
  report = json.loads(capsys.readouterr().out)
  assert report["examples"] == 30 and report["over_max_prompt_length"] == 30
  assert report["prompt_tokens"]["min"] <= report["prompt_tokens"]["p50"] <= report["prompt_tokens"]["max"]
  bad = _write_jsonl(tmp_path / "bad.jsonl", [{"id": "a", "domain": "math", "prompt": "x"}])
  assert main(["check", str(bad)]) == 1
  assert "dataset 'bad.jsonl' row 0: field 'ground_truth' is missing" in capsys.readouterr().err
