"""Code-reward throughput: programs per second for a simple correct solution with 10 tests; prints JSON.

Measures, in one run: sequential `score_code` calls in this process, the same through a `RewardManager` pool
(one worker per core by default), and the sandbox start-up alone (a program that does nothing), each with the
isolation this machine grants ("auto") and, for comparison, process-level containment only ("none"). Then the
same two figures ("auto") for the test-program forms: a HumanEval-style check(candidate) with 10 asserts (one
test) and an MBPP-style problem with 3 assert statements and a setup (three tests, each in its own process).

  python -m benchmarks.code_reward                  # 40 programs per setting
  python -m benchmarks.code_reward --programs 100 --workers 2 --out code_reward.json
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import resource
import statistics
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from prorl_jax.rewards import code_reward, sandbox  # pylint: disable=g-import-not-at-top
from prorl_jax.rewards.manager import RewardManager

RESPONSE = "Read two integers and print their sum.\n```python\na, b = map(int, input().split())\nprint(a + b)\n```\n"
GROUND_TRUTH = {"inputs": [f"{i} {i * 7}\n" for i in range(10)], "outputs": [f"{i * 8}\n" for i in range(10)]}
PROGRAM_FORMS = {  # name -> (response, ground truth)
    "humaneval_check": (
        "```python\ndef running_max(xs):\n    out, best = [], None\n    for x in xs:\n"
        "        best = x if best is None else max(best, x)\n        out.append(best)\n    return out\n```\n",
        {"entry_point": "running_max", "test": "def check(candidate):\n" + "".join(
            f"    assert candidate({list(range(i, -1, -1)) + [i + 1]}) == {[i] * (i + 1) + [i + 1]}\n"
            for i in range(10))}),
    "mbpp_asserts": (
        "```python\nimport math\n\n\ndef hypotenuse(a, b):\n    return math.sqrt(a * a + b * b)\n```\n",
        {"assert_tests": ["assert hypotenuse(3, 4) == 5", "assert math.isclose(hypotenuse(1, 1), 2 ** 0.5)",
                          "assert hypotenuse(0, 0) == 0"], "setup": "import math"}),
}


def _cpu_s():
  """CPU time of this process and of every descendant it (transitively) reaped: the sandbox's whole cost."""
  own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
  return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _sequential(n, isolation, response=RESPONSE, ground_truth=GROUND_TRUTH):
  tests = code_reward.parse_tests(ground_truth)
  code = code_reward.extract_code(response)
  config = sandbox.SandboxConfig(isolation=isolation)
  code_reward.run_tests(code, tests, config=config)  # warm the page cache
  latencies = []
  cpu, start = _cpu_s(), time.perf_counter()
  for _ in range(n):
    t = time.perf_counter()
    res = code_reward.run_tests(code, tests, config=config)
    latencies.append(time.perf_counter() - t)
    assert res.reward == 1.0, res
  total, cpu = time.perf_counter() - start, _cpu_s() - cpu
  return {"programs_per_s": n / total, "latency_median_s": statistics.median(latencies),
          "latency_p90_s": sorted(latencies)[int(0.9 * (n - 1))], "cpu_s_per_program": cpu / n,
          # what the CPU cost allows on all cores of an otherwise idle machine (this one is shared)
          "cpu_bound_programs_per_s_all_cores": (os.cpu_count() or 1) * n / cpu, "isolation": list(res.isolation)}


def _pool(n, workers, response=RESPONSE, ground_truth=GROUND_TRUTH):
  with RewardManager(workers, preload=["code"]) as rm:
    rm.score_batch(["code"] * workers, [response] * workers, [ground_truth] * workers)  # workers up and warm
    start = time.perf_counter()
    batch = rm.score_batch(["code"] * n, [response] * n, [ground_truth] * n)
    total = time.perf_counter() - start
  assert batch.counts()["ok"] == n and float(batch.scores.min()) == 1.0, batch.counts()
  return {"programs_per_s": n / total, "workers": workers,
          "item_time_median_s": statistics.median(i.elapsed_s for i in batch.info)}


def _startup(n, isolation):
  config = sandbox.SandboxConfig(isolation=isolation)
  start = time.perf_counter()
  for _ in range(n):
    sandbox.run_sandboxed([sys.executable, "-S", "-c", "pass"], wall_s=10.0, config=config)
  return {"runs_per_s": n / (time.perf_counter() - start)}


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--programs", type=int, default=40)
  p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
  p.add_argument("--out", type=str, default=None)
  args = p.parse_args()
  load_before = os.getloadavg()[0]
  result = {
      "benchmark": "code_reward", "tests_per_program": len(GROUND_TRUTH["inputs"]), "programs": args.programs,
      "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "root": os.geteuid() == 0,
                  "loadavg_1min_before": round(load_before, 2)},
      "sequential": {m: _sequential(args.programs, m) for m in ("auto", "none")},
      "pool": _pool(args.programs, args.workers),
      "sandbox_startup_only": {m: _startup(args.programs, m) for m in ("auto", "none")},
      "program_forms": {name: {"tests_per_program": len(truth.get("assert_tests", [None])),
                               "sequential": _sequential(args.programs, "auto", response, truth),
                               "pool": _pool(args.programs, args.workers, response, truth)}
                        for name, (response, truth) in PROGRAM_FORMS.items()},
  }
  result["machine"]["loadavg_1min_after"] = round(os.getloadavg()[0], 2)
  text = json.dumps(result, indent=2)
  print(text)
  if args.out:
    pathlib.Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
  main()
