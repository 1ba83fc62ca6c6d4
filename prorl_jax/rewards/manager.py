"""Batched, parallel reward computation in a pool of worker processes that survives its verifiers.

Workers are plain interpreters started with `subprocess` (no fork of the caller, which has JAX threads; no re-import
of `__main__` as multiprocessing's spawn/forkserver would do), once, and reused across batches. Each scores one item
at a time in its main thread (math-verify needs `signal.alarm`). An item that raises gives 0 with status "error"; an
item that runs past its timeout gets its worker killed (process group, and any sandbox it started) and gives 0 with
status "timeout"; a worker that dies (segfault, os._exit) gives 0 with status "error". Dead or killed workers are
replaced in the background. Every failure is logged as a warning.

  with RewardManager(num_workers=2) as rm:
    batch = rm.score_batch(["math", "code"], responses, ground_truths)
    batch.scores        # float32 [batch]
    batch.counts()      # {"ok": 2, "timeout": 0, "error": 0}
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import math
import os
import pickle
import selectors
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import weakref
from typing import Any, Mapping, Sequence

import numpy as np

from prorl_jax.rewards.domains import DOMAINS, domain_function
from prorl_jax.rewards.sandbox import cleanup_after

_log = logging.getLogger(__name__)
_HEADER = struct.Struct("!I")
_PKG_PARENT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_MAX_REPLY_BYTES = 1 << 20
_MAX_WARNINGS_PER_BATCH = 10


@dataclasses.dataclass(frozen=True)
class ItemInfo:
  """What happened to one item. status: "ok", "timeout" or "error"; error_type is the exception class name."""
  domain: str
  status: str
  elapsed_s: float
  error_type: str = ""
  error: str = ""
  worker_pid: int = 0


@dataclasses.dataclass(frozen=True)
class RewardBatch:
  """scores: float32 [batch] (0 where status != "ok"); info: one ItemInfo per item."""
  scores: np.ndarray
  info: tuple[ItemInfo, ...]

  def counts(self) -> dict[str, int]:
    c = collections.Counter(i.status for i in self.info)
    return {s: c.get(s, 0) for s in ("ok", "timeout", "error")}

  def metrics(self, prefix: str = "reward/") -> dict[str, float]:
    """Flat scalars for a logger: status counts, mean score and mean verifier time per domain."""
    out = {f"{prefix}{k}": float(v) for k, v in self.counts().items()}
    for d in sorted({i.domain for i in self.info}):
      idx = [k for k, i in enumerate(self.info) if i.domain == d]
      out[f"{prefix}{d}/mean"] = float(np.mean(self.scores[idx]))
      out[f"{prefix}{d}/time_s"] = float(np.mean([self.info[k].elapsed_s for k in idx]))
    return out


@dataclasses.dataclass
class _Worker:
  proc: subprocess.Popen
  sock: socket.socket
  state: str = "starting"  # starting | idle | busy
  item: int | None = None
  deadline: float = 0.0
  started: float = 0.0
  tasks: int = 0
  buf: bytearray = dataclasses.field(default_factory=bytearray)


def _kill(worker: _Worker) -> None:
  try:
    os.killpg(worker.proc.pid, signal.SIGKILL)
  except (ProcessLookupError, PermissionError):
    pass
  try:
    worker.sock.close()
  except OSError:
    pass
  worker.proc.wait()
  cleanup_after(worker.proc.pid)  # a code sandbox it was running: stray processes (no pid namespace), its dir


def _shutdown(workers: list[_Worker]) -> None:
  for w in list(workers):
    _kill(w)
  workers.clear()


class RewardManager:
  """Process pool for reward verifiers. Thread-safe (batches are serialised); reuse one across training steps."""

  def __init__(self, num_workers: int | None = None, *, timeout_s: float = 10.0,
               domain_timeouts: Mapping[str, float] | None = None, code_timeout_s: float = 5.0,
               domains: Mapping[str, str] | None = None, preload: Sequence[str] | None = None,
               max_tasks_per_worker: int | None = None, start_timeout_s: float = 120.0):
    """Starts the workers (in the background; the first batch waits for them).

    Args:
      num_workers: processes; default os.cpu_count().
      timeout_s: per-item limit for domains without an entry in `domain_timeouts`.
      domain_timeouts: per-domain limits; "code" defaults to code_timeout_s + 5 (the sandbox enforces its own).
      code_timeout_s: whole-program budget of the code reward (ProRL: 5 s).
      domains: extra or replacement {name: "module:function"} verifiers, f(response, ground_truth) -> float.
      preload: domains whose modules each worker imports before taking work (default: all known domains; those
        that fail to import are reported once and fail per item later).
      max_tasks_per_worker: recycle a worker after this many items (bounds leaks in verifiers); None = never.
      start_timeout_s: a worker not ready within this is killed and replaced.
    """
    self._domains = {**DOMAINS, **(domains or {})}
    n = (os.cpu_count() or 1) if num_workers is None else num_workers
    if not isinstance(n, int) or n < 1:
      raise ValueError(f"num_workers must be a positive int, got {num_workers!r}")
    for name, value in [("timeout_s", timeout_s), ("code_timeout_s", code_timeout_s),
                        ("start_timeout_s", start_timeout_s), *(domain_timeouts or {}).items()]:
      if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"timeout {name!r} must be a positive number of seconds, got {value!r}")
    for d in domain_timeouts or {}:
      domain_function(d, self._domains)
    if max_tasks_per_worker is not None and (not isinstance(max_tasks_per_worker, int) or max_tasks_per_worker < 1):
      raise ValueError(f"max_tasks_per_worker must be a positive int or None, got {max_tasks_per_worker!r}")
    self._timeouts = {"code": code_timeout_s + 5.0, **(domain_timeouts or {})}
    self._default_timeout = float(timeout_s)
    self._kwargs = {"code": {"timeout_s": float(code_timeout_s)}}
    self._preload = [domain_function(d, self._domains) for d in (self._domains if preload is None else preload)]
    self._num_workers = n
    self._max_tasks = max_tasks_per_worker
    self._start_timeout = float(start_timeout_s)
    self._lock = threading.Lock()
    self._workers: list[_Worker] = []
    self._start_failures = 0
    self._reported_preload = False
    self.restarts = 0
    self._closed = False
    self._finalizer = weakref.finalize(self, _shutdown, self._workers)
    for _ in range(n):
      self._spawn()

  @property
  def num_workers(self) -> int:
    return self._num_workers

  def _spawn(self) -> None:
    parent, child = socket.socketpair()
    env = dict(os.environ, JAX_PLATFORMS="cpu",  # a verifier importing jax must not claim the accelerator
               PYTHONPATH=os.pathsep.join(p for p in (_PKG_PARENT, os.environ.get("PYTHONPATH")) if p))
    proc = subprocess.Popen(
        [sys.executable, "-P", "-m", "prorl_jax.rewards._reward_worker", str(child.fileno()),
         json.dumps(self._preload), str(os.getpid())],
        pass_fds=(child.fileno(),), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, env=env,
        process_group=0, close_fds=True)
    child.close()
    parent.setblocking(False)
    self._workers.append(_Worker(proc, parent, started=time.monotonic()))

  def _retire(self, w: _Worker, replace: bool = True) -> None:
    _kill(w)
    self._workers.remove(w)
    if replace and not self._closed:
      self.restarts += 1
      self._spawn()

  def _read(self, w: _Worker) -> list[dict] | None:
    """Non-blocking read of complete JSON frames; None when the worker is gone or sent garbage."""
    try:
      chunk = w.sock.recv(1 << 16)
    except BlockingIOError:
      return []
    except OSError:
      return None
    if not chunk:
      return None
    w.buf += chunk
    msgs = []
    while len(w.buf) >= _HEADER.size:
      size = _HEADER.unpack_from(w.buf)[0]
      if size > _MAX_REPLY_BYTES:
        return None
      if len(w.buf) < _HEADER.size + size:
        break
      try:
        msgs.append(json.loads(bytes(w.buf[_HEADER.size:_HEADER.size + size])))
      except ValueError:
        return None
      del w.buf[:_HEADER.size + size]
    return msgs

  def _dispatch(self, w: _Worker, item: int, task: tuple) -> bool:
    path, args, kwargs, timeout = task
    data = pickle.dumps((item, path, args, kwargs), protocol=pickle.HIGHEST_PROTOCOL)
    try:
      w.sock.setblocking(True)  # the worker is idle in recv(), so this cannot stall for long
      w.sock.sendall(_HEADER.pack(len(data)) + data)
      w.sock.setblocking(False)
    except OSError:
      return False
    w.state, w.item, w.deadline = "busy", item, time.monotonic() + timeout
    return True

  def score_batch(self, domains: Sequence[str], responses: Sequence[str], ground_truths: Sequence[Any], *,
                  timeout_s: float | None = None) -> RewardBatch:
    """Scores items in parallel; never raises for a verifier's failure (see ItemInfo), only for bad arguments.

    Args:
      domains, responses, ground_truths: [batch] each.
      timeout_s: per-item limit for this call, overriding the manager's per-domain limits.
    """
    if not (len(domains) == len(responses) == len(ground_truths)):
      raise ValueError(f"domains, responses and ground_truths must have equal lengths, got "
                       f"{len(domains)}, {len(responses)}, {len(ground_truths)}")
    if timeout_s is not None and (not isinstance(timeout_s, (int, float)) or not math.isfinite(timeout_s)
                                  or timeout_s <= 0):
      raise ValueError(f"timeout_s must be a positive number of seconds, got {timeout_s!r}")
    tasks = []
    for d, r, g in zip(domains, responses, ground_truths):
      path = domain_function(d, self._domains)
      limit = timeout_s if timeout_s is not None else self._timeouts.get(d, self._default_timeout)
      tasks.append((path, (r, g), self._kwargs.get(d, {}), float(limit)))
    with self._lock:
      if self._closed:
        raise RuntimeError("RewardManager is closed")
      results = self._run(list(domains), tasks)
    scores = np.asarray([r[0] for r in results], dtype=np.float32)
    return RewardBatch(scores, tuple(r[1] for r in results))

  def score_one(self, domain: str, response: str, ground_truth: Any, *,
                timeout_s: float | None = None) -> tuple[float, ItemInfo]:
    """One item: (score, info)."""
    batch = self.score_batch([domain], [response], [ground_truth], timeout_s=timeout_s)
    return float(batch.scores[0]), batch.info[0]

  def wait_ready(self) -> int:
    """Blocks until no worker is still starting (each has imported its preloads, or failed and been replaced up to
    the start limits); returns the number of workers ready for items. Batches never need it (an idle worker takes
    items while others start); it is for callers that want the whole pool before timing or load."""
    with self._lock:
      if self._closed:
        raise RuntimeError("RewardManager is closed")
      self._run([], [], until_started=True)
      return sum(w.state == "idle" for w in self._workers)

  def _run(self, domains, tasks, until_started=False):
    for w in list(self._workers):
      if w.state == "busy":  # left over from a batch interrupted (e.g. KeyboardInterrupt): its reply is stale
        self._retire(w)
    results: list[Any] = [None] * len(tasks)
    pending = collections.deque(range(len(tasks)))
    sent_at: dict[int, float] = {}
    warnings = 0

    def finish(item, value, status, error_type="", error="", pid=0):
      nonlocal warnings
      elapsed = time.monotonic() - sent_at.get(item, time.monotonic())
      results[item] = (value, ItemInfo(domains[item], status, elapsed, error_type, error, pid))
      if status != "ok":
        warnings += 1
        if warnings <= _MAX_WARNINGS_PER_BATCH:
          _log.warning("reward item %d (%s): %s after %.2fs %s", item, domains[item], status, elapsed, error)

    while pending or any(w.state == "busy" or (until_started and w.state == "starting") for w in self._workers):
      for w in self._workers:
        if w.state == "idle" and pending:
          item = pending.popleft()
          if self._dispatch(w, item, tasks[item]):
            sent_at[item] = time.monotonic()
          else:
            pending.appendleft(item)
            self._retire(w)
            break
      now = time.monotonic()
      deadlines = [w.deadline if w.state == "busy" else w.started + self._start_timeout
                   for w in self._workers if w.state != "idle"]
      sel = selectors.DefaultSelector()
      for w in self._workers:
        sel.register(w.sock, selectors.EVENT_READ, w)
      ready = [key.data for key, _ in sel.select(max(0.0, min(deadlines, default=now + 1.0) - now))]
      sel.close()
      for w in ready:
        msgs = self._read(w)
        if msgs is None:  # died (segfault, os._exit, killed by the OOM killer) or broke the protocol
          code = w.proc.poll() if w.proc.poll() is not None else _wait_briefly(w.proc)
          if w.state == "busy":
            finish(w.item, 0.0, "error", "WorkerDied", f"worker {w.proc.pid} died ({_describe_exit(code)})",
                   w.proc.pid)
          elif w.state == "starting":
            self._start_failed(f"worker {w.proc.pid} died while starting ({_describe_exit(code)})")
          self._retire(w)
          continue
        for m in msgs:
          if "ready" in m and w.state == "starting":
            w.state, self._start_failures = "idle", 0
            self._report_preload(m.get("preload_errors") or {})
          elif m.get("id") == w.item and w.state == "busy":
            if m.get("traceback"):
              _log.debug("reward item %d (%s) traceback:\n%s", w.item, domains[w.item], m["traceback"])
            v = m.get("value")
            if m.get("status") != "ok":
              finish(w.item, 0.0, "error", str(m.get("error_type", "")), str(m.get("error", "")), w.proc.pid)
            elif isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
              finish(w.item, float(v), "ok", pid=w.proc.pid)
            else:
              finish(w.item, 0.0, "error", "BadValue", f"verifier returned {v!r}", w.proc.pid)
            w.state, w.item, w.tasks = "idle", None, w.tasks + 1
            if self._max_tasks is not None and w.tasks >= self._max_tasks:
              self._retire(w)
              break
      now = time.monotonic()
      for w in list(self._workers):
        if w.state == "busy" and now >= w.deadline:
          finish(w.item, 0.0, "timeout", "Timeout", f"killed worker {w.proc.pid} after {tasks[w.item][-1]:.1f}s",
                 w.proc.pid)
          self._retire(w)
        elif w.state == "starting" and now >= w.started + self._start_timeout:
          self._start_failed(f"worker {w.proc.pid} not ready after {self._start_timeout:.0f}s")
          self._retire(w)
    if warnings > _MAX_WARNINGS_PER_BATCH:
      _log.warning("reward batch: %d items failed (%d warnings not shown)", warnings,
                   warnings - _MAX_WARNINGS_PER_BATCH)
    return results

  def _start_failed(self, why: str) -> None:
    self._start_failures += 1
    _log.warning("reward manager: %s", why)
    if self._start_failures >= 3 * self._num_workers:
      raise RuntimeError(f"reward workers keep failing to start ({why}); see their stderr above")

  def _report_preload(self, errors: Mapping[str, str]) -> None:
    if errors and not self._reported_preload:
      self._reported_preload = True
      _log.warning("reward manager: could not preload %s; items of those domains will fail",
                   "; ".join(f"{k} ({v})" for k, v in errors.items()))

  def close(self) -> None:
    """Kills the workers. Idempotent; also runs at garbage collection and interpreter exit."""
    with self._lock:
      self._closed = True
      self._finalizer()

  def __enter__(self) -> "RewardManager":
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def _wait_briefly(proc: subprocess.Popen) -> int | None:
  try:
    return proc.wait(timeout=1.0)
  except subprocess.TimeoutExpired:
    return None


def _describe_exit(code: int | None) -> str:
  if code is None:
    return "exit status unknown"
  if code < 0:
    try:
      return f"killed by {signal.Signals(-code).name}"
    except ValueError:
      return f"killed by signal {-code}"
  return f"exit code {code}"
