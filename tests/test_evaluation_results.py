"""Tests for prorl_jax.evaluation.results: append/load, resume after a crash, fingerprint checks."""

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
import types

import numpy as np
import pytest

from prorl_jax.evaluation import EvalSettings, ProblemResult, evaluate_problems, summarize
from prorl_jax.evaluation.results import (FORMAT, ResultsFile, ResultsFileError, ResultsMismatchError,
                                          eval_fingerprint)


def _result(i, n=4):
  return ProblemResult(index=i, id=f"aime2024/{i}", benchmark="aime2024", domain="math",
                       scores=[float((i + j) % 2) for j in range(n)], lengths=[100 + j for j in range(n)],
                       finished_by_eos=[j != 0 for j in range(n)], responses=None if i % 2 else [f"r{j}" for j in
                                                                                                   range(n)])


@pytest.fixture
def fingerprint():
  return eval_fingerprint(checkpoint="/ckpt/step_100", settings=EvalSettings(num_samples=4, seed=3),
                          benchmarks=("aime2024", "ifeval"), problem_ids=[f"p{i}" for i in range(10)])


def test_fingerprint_records_sampling_settings_only():
  a = eval_fingerprint(checkpoint="c", settings=EvalSettings(), benchmarks=["x"])
  assert {k: a[k] for k in ("num_samples", "temperature", "top_p", "top_k", "max_new_tokens", "seed")} == {
      "num_samples": 16, "temperature": 0.6, "top_p": 0.95, "top_k": 0, "max_new_tokens": 1024, "seed": 0}
  # Batch size and keeping responses do not change the samples.
  b = eval_fingerprint(checkpoint="c", settings=EvalSettings(batch_prompts=3, keep_responses=True), benchmarks=["x"])
  assert a == b
  c = eval_fingerprint(checkpoint="c", settings=EvalSettings(), benchmarks=["x"], problem_ids=["1", "2"])
  d = eval_fingerprint(checkpoint="c", settings=EvalSettings(), benchmarks=["x"], problem_ids=["2", "1"])
  assert c["problems"]["count"] == 2 and c != d


def test_append_and_load_round_trip(tmp_path, fingerprint):
  store = ResultsFile(tmp_path / "run" / "results.jsonl")
  assert store.header() is None and store.load() == [] and store.done_indices() == set()
  assert store.start(fingerprint) == set()
  results = [_result(i) for i in (3, 0, 7)]
  store.append(results[0])
  store.extend(results[1:])
  store.close()
  lines = (tmp_path / "run" / "results.jsonl").read_text().splitlines()
  assert json.loads(lines[0]) == {"__header__": {"format": FORMAT, "fingerprint": fingerprint}}
  assert len(lines) == 4
  assert store.load() == sorted(results, key=lambda r: r.index)
  assert store.done_indices() == {0, 3, 7}
  assert store.header()["fingerprint"] == fingerprint


def test_resume_continues_and_ignores_a_truncated_last_line(tmp_path, fingerprint):
  path = tmp_path / "results.jsonl"
  with ResultsFile(path) as store:
    store.start(fingerprint)
    store.extend([_result(0), _result(1)])
  # A crash in the middle of writing problem 2: half a line, no newline.
  full = json.dumps(_result(2).to_json())
  with open(path, "a") as f:
    f.write(full[: len(full) // 2])
  store = ResultsFile(path)
  assert store.done_indices() == {0, 1}
  assert store.start(fingerprint) == {0, 1}
  store.append(_result(2))
  store.close()
  assert [r.index for r in store.load()] == [0, 1, 2]
  assert path.read_text().count("\n") == 4  # header + 3 complete lines: the fragment was cut off


def test_settings_mismatch_refuses_to_resume(tmp_path, fingerprint):
  path = tmp_path / "results.jsonl"
  with ResultsFile(path) as store:
    store.start(fingerprint)
    store.append(_result(0))
  other = dict(fingerprint, temperature=1.0, checkpoint="/ckpt/step_200")
  with pytest.raises(ResultsMismatchError) as info:
    ResultsFile(path).start(other)
  message = str(info.value)
  assert "temperature: file has 0.6, now 1.0" in message and "checkpoint" in message
  assert "new workdir" in message and "--overwrite" in message
  # overwrite discards the old results.
  store = ResultsFile(path)
  assert store.start(other, overwrite=True) == set()
  store.close()
  assert store.header()["fingerprint"] == json.loads(json.dumps(other, sort_keys=True)) and store.load() == []


def test_a_file_not_written_by_results_file_is_refused(tmp_path, fingerprint):
  path = tmp_path / "other.jsonl"
  path.write_text(json.dumps({"index": 0}) + "\n")
  with pytest.raises(ResultsFileError, match="not a .* header"):
    ResultsFile(path).start(fingerprint)
  path.write_text(json.dumps({"__header__": {"format": FORMAT, "fingerprint": fingerprint}}) + "\n{broken\n{}\n")
  with pytest.raises(ResultsFileError, match="line 2 is not valid JSON"):
    ResultsFile(path).load()


def test_append_before_start_and_double_start_fail(tmp_path, fingerprint):
  store = ResultsFile(tmp_path / "r.jsonl")
  with pytest.raises(RuntimeError, match="start"):
    store.append(_result(0))
  store.start(fingerprint)
  with pytest.raises(RuntimeError, match="already open"):
    store.start(fingerprint)
  store.close()


@pytest.mark.skipif(sys.platform == "win32", reason="advisory locks are POSIX-only")
def test_second_writer_is_refused(tmp_path, fingerprint):
  path = tmp_path / "r.jsonl"
  first = ResultsFile(path)
  first.start(fingerprint)
  with pytest.raises(RuntimeError, match="another process"):
    ResultsFile(path).start(fingerprint)
  first.close()
  second = ResultsFile(path)
  second.start(fingerprint)
  second.close()


def test_killed_writer_loses_nothing_already_appended(tmp_path, fingerprint):
  """A process killed with SIGKILL mid-run: every append it returned from survives, the file resumes."""
  path = tmp_path / "r.jsonl"
  script = textwrap.dedent(f"""
      import json, os, signal, sys
      from prorl_jax.evaluation import ProblemResult
      from prorl_jax.evaluation.results import ResultsFile
      store = ResultsFile({str(path)!r})
      store.start(json.loads({json.dumps(json.dumps(fingerprint))}))
      for i in range(5):
        store.append(ProblemResult(i, f"p{{i}}", "b", "math", [1.0, 0.0], [3, 4], [True, False]))
      store._file.write(b'{{"index": 5, "id": "p5", "bench')  # a write in flight
      store._file.flush()
      os.kill(os.getpid(), signal.SIGKILL)
  """)
  proc = subprocess.run([sys.executable, "-c", script], env={**os.environ, "JAX_PLATFORMS": "cpu"},
                        capture_output=True, timeout=120)
  assert proc.returncode == -9, proc.stderr.decode()
  store = ResultsFile(path)
  assert store.done_indices() == set(range(5))
  assert store.start(fingerprint) == set(range(5))
  store.append(dataclasses.replace(_result(5, n=2)))
  store.close()
  assert [r.index for r in store.load()] == list(range(6))


class _FakeSampler:
  """Stands in for rollout.Sampler: each sample's tokens are a pure function of (seed, row id), as in the real
  sampler, so a resumed run must reproduce an uninterrupted one exactly."""

  def generate(self, params, prompts, *, max_new_tokens, sampling, num_samples, eos_token_ids, seed, row_ids):
    del params, sampling, eos_token_ids
    assert len(row_ids) == len(prompts) * num_samples
    lengths = np.array([1 + (seed * 7 + r * 13) % max_new_tokens for r in row_ids], np.int32)
    tokens = np.zeros((len(row_ids), max_new_tokens), np.int32)
    for i, r in enumerate(row_ids):
      tokens[i, :lengths[i]] = (r * 31 + seed + np.arange(lengths[i])) % 5
    return types.SimpleNamespace(tokens=tokens, lengths=lengths, finished_by_eos=lengths < max_new_tokens,
                                 response=lambda row: tokens[row, :lengths[row]].tolist())


def _evaluate(store_or_none, problems, settings, skip=(), crash_after=None):
  seen = []

  def on_result(result):
    if crash_after is not None and len(seen) == crash_after:
      raise KeyboardInterrupt("killed")
    seen.append(result)
    if store_or_none is not None:
      store_or_none.append(result)

  return evaluate_problems(sampler=_FakeSampler(), params=None, prompt_ids=[[1, 2]] * len(problems),
                           problems=problems, decode=lambda ids: " ".join(map(str, ids)), eos_token_ids=[9],
                           score_batch=lambda d, texts, t: np.array([float(x.count("0") % 2) for x in texts]),
                           settings=settings, skip=skip, on_result=on_result)


def test_interrupted_evaluation_resumes_to_the_uninterrupted_result(tmp_path):
  problems = [{"id": f"p{i}", "benchmark": "b" if i % 2 else "a", "domain": "math", "ground_truth": "1"}
              for i in range(11)]
  settings = EvalSettings(num_samples=4, max_new_tokens=6, seed=5, batch_prompts=3)
  fp = eval_fingerprint(checkpoint="c", settings=settings, benchmarks=["a", "b"],
                        problem_ids=[p["id"] for p in problems])
  reference = _evaluate(None, problems, settings)
  store = ResultsFile(tmp_path / "results.jsonl")
  store.start(fp)
  with pytest.raises(KeyboardInterrupt):
    _evaluate(store, problems, settings, crash_after=5)
  store.close()
  store = ResultsFile(tmp_path / "results.jsonl")
  done = store.start(fp)
  assert done == set(range(5))
  rest = _evaluate(store, problems, settings, skip=done)
  store.close()
  assert [r.index for r in rest] == list(range(5, 11))
  assert store.load() == reference
  assert summarize(store.load()) == summarize(reference)
