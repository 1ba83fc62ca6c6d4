"""RewardManager: batched scoring in worker processes that survive crashing, hanging and dying verifiers."""

import logging
import os
import signal
import tempfile
import textwrap
import threading
import time

import numpy as np
import pytest

from prorl_jax.rewards import sandbox
from prorl_jax.rewards.manager import RewardManager

VERIFIERS = textwrap.dedent("""
    import ctypes, os, time
    def exact(response, gt):
      return float(response == gt)
    def hang(response, gt):
      while True:
        pass
    def nap(response, gt):
      time.sleep(float(gt))
      return 0.5
    def exit_(response, gt):
      os._exit(3)
    def segfault(response, gt):
      ctypes.string_at(0)
    def malformed(response, gt):
      raise ValueError("ground_truth['answer'] is missing")
    def nan(response, gt):
      return float("nan")
    def pid(response, gt):
      return float(os.getpid())
""")
NAMES = ("exact", "hang", "nap", "exit_", "segfault", "malformed", "nan", "pid")


@pytest.fixture(scope="module")
def verifier_module(tmp_path_factory):
  d = tmp_path_factory.mktemp("verifiers")
  (d / "fake_verifiers.py").write_text(VERIFIERS)
  old = os.environ.get("PYTHONPATH")
  os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(d), old) if p)  # workers inherit it
  yield {n: f"fake_verifiers:{n}" for n in NAMES}
  if old is None:
    del os.environ["PYTHONPATH"]
  else:
    os.environ["PYTHONPATH"] = old


@pytest.fixture(scope="module")
def manager(verifier_module):
  with RewardManager(2, timeout_s=1.0, domains=verifier_module, preload=["exact"], code_timeout_s=1.5) as rm:
    yield rm


def _sandbox_leftovers(worker_pids):
  """Processes and directories of sandboxes that these workers started."""
  prefixes = [f"{sandbox.TOKEN_VAR}={p}-".encode() for p in worker_pids]
  found = [n for n in os.listdir(tempfile.gettempdir()) if any(n.startswith(f"prorl_sbx_{p}_") for p in worker_pids)]
  for name in os.listdir("/proc"):
    if name.isdigit():
      try:
        with open(f"/proc/{name}/environ", "rb") as f:
          env = f.read()
      except OSError:
        continue
      if any(p in env for p in prefixes):
        found.append(int(name))
  return found


def test_scores_and_info(manager):
  batch = manager.score_batch(["exact"] * 4, ["a", "b", "c", "d"], ["a", "x", "c", "y"])
  assert batch.scores.dtype == np.float32 and batch.scores.shape == (4,)
  np.testing.assert_array_equal(batch.scores, [1, 0, 1, 0])
  assert batch.counts() == {"ok": 4, "timeout": 0, "error": 0}
  assert all(i.status == "ok" and i.elapsed_s >= 0 and i.worker_pid > 0 for i in batch.info)


def test_failures_give_zero_and_the_pool_survives(manager, caplog):
  restarts = manager.restarts
  domains = ["exact", "malformed", "hang", "exit_", "segfault", "nan", "nap", "exact"]
  start = time.monotonic()
  with caplog.at_level(logging.WARNING, logger="prorl_jax.rewards.manager"):
    batch = manager.score_batch(domains, ["a"] * 8, ["a", "x", "x", "x", "x", "x", "0.1", "a"])
  # The hang costs its 1 s limit; the batch also waits for replacement workers to start (seconds each when the
  # machine is loaded), so its own bound only shows that nothing waited for the hang to end.
  assert time.monotonic() - start < 30.0
  assert 0.9 < batch.info[2].elapsed_s < 1.0 + 1.0, batch.info[2]  # its clock starts just after its deadline's
  np.testing.assert_array_equal(batch.scores, [1, 0, 0, 0, 0, 0, 0.5, 1])
  status = [(i.status, i.error_type) for i in batch.info]
  assert status == [("ok", ""), ("error", "ValueError"), ("timeout", "Timeout"), ("error", "WorkerDied"),
                    ("error", "WorkerDied"), ("error", "BadValue"), ("ok", ""), ("ok", "")]
  assert "SIGSEGV" in batch.info[4].error and "exit code 3" in batch.info[3].error
  assert "ground_truth['answer']" in batch.info[1].error
  assert batch.counts() == {"ok": 3, "timeout": 1, "error": 4}
  assert manager.restarts - restarts == 3  # hang, exit and segfault each cost one worker
  assert sum("reward item" in r.message for r in caplog.records) == 5
  after = manager.score_batch(["exact"] * 6, ["a"] * 6, ["a"] * 6)  # replacements took over
  assert after.counts()["ok"] == 6


def test_workers_are_reused_across_batches(manager):
  first = {i.worker_pid for i in manager.score_batch(["pid"] * 6, [""] * 6, [""] * 6).info}
  second = {i.worker_pid for i in manager.score_batch(["pid"] * 6, [""] * 6, [""] * 6).info}
  assert first == second and len(first) <= manager.num_workers


def test_items_run_in_parallel(manager):
  # Replacements for the workers killed above may still be starting; a batch would not wait for them.
  assert manager.wait_ready() == manager.num_workers
  start = time.monotonic()
  batch = manager.score_batch(["nap"] * 4, [""] * 4, ["0.5"] * 4)
  elapsed = time.monotonic() - start
  assert batch.counts()["ok"] == 4 and len({i.worker_pid for i in batch.info}) == 2
  assert elapsed < 4 * 0.5, f"{elapsed:.2f}s: two workers should overlap the naps"


def test_wait_ready_waits_for_every_worker(verifier_module):
  with RewardManager(3, domains=verifier_module, preload=["exact"]) as rm:
    assert rm.wait_ready() == 3
    batch = rm.score_batch(["nap"] * 3, [""] * 3, ["0.3"] * 3)
    assert len({i.worker_pid for i in batch.info}) == 3  # all three were idle when the batch started
  with pytest.raises(RuntimeError, match="closed"):
    rm.wait_ready()


def test_concurrent_callers_get_their_own_results(manager):
  out = {}

  def call(k):
    out[k] = manager.score_batch(["exact"] * 5, [str(k)] * 5, [str(k), "x", str(k), "x", str(k)]).scores

  threads = [threading.Thread(target=call, args=(k,)) for k in range(3)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  for k in range(3):
    np.testing.assert_array_equal(out[k], [1, 0, 1, 0, 1])


def test_code_domain_with_hostile_program(manager):
  bomb = "```python\nimport os\nwhile True:\n  try:\n    os.fork()\n  except OSError:\n    pass\n```"
  good = "```python\nprint(int(input()) * 2)\n```"
  gt = {"inputs": ["2\n"], "outputs": ["4\n"]}
  batch = manager.score_batch(["code", "code"], [bomb, good], [gt, gt])
  np.testing.assert_array_equal(batch.scores, [0.0, 1.0])
  assert batch.counts()["ok"] == 2 and _sandbox_leftovers({i.worker_pid for i in batch.info}) == []


def test_worker_killed_during_a_sandbox_leaves_nothing(verifier_module):
  loop = "```python\nwhile True:\n  pass\n```"
  with RewardManager(1, domains=verifier_module, domain_timeouts={"code": 0.5}, code_timeout_s=5.0,
                     preload=["code"]) as rm:
    batch = rm.score_batch(["code"], [loop], [{"inputs": [""], "outputs": ["x"]}])
    assert batch.info[0].status == "timeout"
    time.sleep(0.2)
    assert _sandbox_leftovers({batch.info[0].worker_pid}) == []


def test_close_kills_the_workers(verifier_module):
  rm = RewardManager(2, domains=verifier_module, preload=[])
  pids = {i.worker_pid for i in rm.score_batch(["pid"] * 4, [""] * 4, [""] * 4).info}
  rm.close()
  rm.close()  # idempotent
  for p in pids:
    assert not os.path.exists(f"/proc/{p}") or open(f"/proc/{p}/stat").read().split(")")[-1].split()[0] == "Z"
  with pytest.raises(RuntimeError, match="closed"):
    rm.score_batch(["exact"], ["a"], ["a"])


def test_missing_verifier_module_is_an_item_error(caplog):
  with caplog.at_level(logging.WARNING, logger="prorl_jax.rewards.manager"):
    with RewardManager(1, domains={"ghost": "no_such_module_xyz:score"}, preload=["ghost"]) as rm:
      batch = rm.score_batch(["ghost"], ["a"], ["a"])
  assert batch.info[0].status == "error" and batch.info[0].error_type == "ModuleNotFoundError"
  assert any("could not preload" in r.message for r in caplog.records)


def test_works_inside_a_process_with_jax_threads(verifier_module):
  import jax.numpy as jnp  # noqa: PLC0415 -- the trainer's situation: XLA thread pools already running
  assert float(jnp.ones(4).sum()) == 4.0
  with RewardManager(1, domains=verifier_module, preload=[]) as rm:
    assert rm.score_batch(["exact"], ["a"], ["a"]).scores[0] == 1.0
  from prorl_jax.rewards.code_reward import score_code  # noqa: PLC0415 -- and the sandbox from this process
  assert score_code("```python\nprint(int(input()) + 1)\n```", {"inputs": ["1"], "outputs": ["2"]}) == 1.0


def test_metrics(manager):
  m = manager.score_batch(["exact", "exact", "nap"], ["a", "b", ""], ["a", "a", "0"]).metrics()
  assert m["reward/ok"] == 3.0 and m["reward/timeout"] == 0.0
  assert m["reward/exact/mean"] == pytest.approx(0.5) and m["reward/nap/mean"] == pytest.approx(0.5)
  assert "reward/exact/time_s" in m


@pytest.mark.parametrize("kwargs, match", [
    ({"num_workers": 0}, "num_workers"), ({"timeout_s": -1}, "timeout_s"),
    ({"domain_timeouts": {"math": float("inf")}}, "math"), ({"domain_timeouts": {"nope": 1.0}}, "unknown"),
    ({"preload": ["nope"]}, "unknown"),
])
def test_bad_construction_arguments(kwargs, match):
  with pytest.raises(ValueError, match=match):
    RewardManager(**kwargs)


def test_bad_batch_arguments(manager):
  with pytest.raises(ValueError, match="known domains: .*code.*math"):
    manager.score_batch(["chemistry"], ["a"], ["a"])
  with pytest.raises(ValueError, match="equal lengths"):
    manager.score_batch(["exact", "exact"], ["a"], ["a"])


def test_workers_are_recycled_after_max_tasks(verifier_module):
  with RewardManager(1, domains=verifier_module, preload=[], max_tasks_per_worker=2) as rm:
    pids = [i.worker_pid for i in rm.score_batch(["pid"] * 5, [""] * 5, [""] * 5).info]
  assert pids[0] == pids[1] != pids[2] == pids[3] != pids[4]


def test_an_interrupted_batch_does_not_leak_into_the_next(verifier_module):
  # A real SIGINT to the main thread (as Ctrl-C), with Python's own handler whatever earlier tests left installed:
  # `_thread.interrupt_main` only flags the interpreter, and the flag was seen to get lost in a full CI run.
  previous = signal.signal(signal.SIGINT, signal.default_int_handler)
  try:
    with RewardManager(1, domains=verifier_module, preload=["exact"]) as rm:
      rm.score_batch(["exact"], ["a"], ["a"])  # the worker is up: the interrupt lands inside the next batch
      timer = threading.Timer(0.5, signal.pthread_kill, (threading.main_thread().ident, signal.SIGINT))
      timer.start()
      with pytest.raises(KeyboardInterrupt):
        rm.score_batch(["nap"], [""], ["5.0"])
      timer.join()
      batch = rm.score_batch(["exact", "exact"], ["a", "b"], ["a", "a"])
      np.testing.assert_array_equal(batch.scores, [1, 0])
      assert batch.counts()["ok"] == 2 and rm.score_batch([], [], []).scores.shape == (0,)
  finally:
    signal.signal(signal.SIGINT, previous)
