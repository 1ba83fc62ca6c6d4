"""Run an untrusted program under OS-level limits (the execution layer of the code reward).

`run_sandboxed(argv, wall_s=...)` starts `_sandbox_child.py` as a fresh interpreter (no `preexec_fn`, so it is safe
to call from a JAX process with threads) in its own process group. That launcher enters new mount, pid, net, ipc and
uts namespaces when the kernel allows (user namespace too when not root), makes the host read-only with private
tmpfs on /tmp, /var/tmp and /dev/shm, runs the program as a dedicated uid when started as root, applies rlimits and
kills everything at the deadline. What this does and does not protect against: SANDBOX.md next to this file.

Stdlib only on purpose: the launcher side must import nothing heavy and nothing the program could shadow.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import os
import re
import secrets
import selectors
import shutil
import signal
import site
import subprocess
import sys
import tempfile
import time
from typing import Mapping, Sequence

from prorl_jax.rewards import _sandbox_child

_log = logging.getLogger(__name__)
_LAUNCHER = os.path.abspath(_sandbox_child.__file__)
TOKEN_VAR = "PRORL_SANDBOX_TOKEN"
_WORKDIR_PREFIX = "prorl_sbx_"
_ISOLATION_MODES = ("auto", "namespaces", "none")
_FILE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_KILL_GRACE_S = 0.3  # the caller's backstop fires this long after init's own deadline
_DRAIN_S = 0.2  # after the launcher exits, how long stray holders of our pipes may delay us
_REAP_S = 0.5  # after killing init, how long the kernel may take to empty the pid namespace


class SandboxError(RuntimeError):
  """The sandbox itself could not be set up (not: the program failed)."""


@dataclasses.dataclass(frozen=True)
class SandboxLimits:
  """Per-run resource limits. Byte sizes in bytes; `processes` counts tasks (threads too) of the sandbox uid."""
  memory_bytes: int = 1 << 30  # RLIMIT_AS (address space), per process
  file_size_bytes: int = 64 << 20  # RLIMIT_FSIZE: largest file (stdout captured to a file included)
  open_files: int = 256
  processes: int = 32  # RLIMIT_NPROC (threads count); enforced only for a dedicated uid or in a user namespace
  stack_bytes: int = 256 << 20
  stdout_bytes: int = 16 << 20  # kept from the pipe; the rest is drained and dropped
  stderr_bytes: int = 64 << 10
  tmpfs_bytes: int = 64 << 20  # size of each private tmpfs (/tmp, /var/tmp, /dev/shm; the working dir gets at
  # least file_size_bytes) -- memory, not disk

  def validate(self) -> None:
    for f in dataclasses.fields(self):
      v = getattr(self, f.name)
      if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
        raise ValueError(f"SandboxLimits.{f.name} must be a positive int, got {v!r}")


@dataclasses.dataclass(frozen=True)
class SandboxConfig:
  """How strongly to isolate.

  isolation: "auto" uses namespaces when the kernel allows and falls back to process-level containment with a
    warning; "namespaces" raises SandboxError instead of falling back; "none" skips namespaces (for tests).
  drop_root: when started as root, run the program as uid `uid_base + launcher pid` (unique among live runs, so
    RLIMIT_NPROC is per run and no host file owned by root is writable).
  tmp_root: parent of the per-run temporary directories (default: tempfile.gettempdir()).
  """
  isolation: str = "auto"
  drop_root: bool = True
  uid_base: int = 2_100_000_000
  tmp_root: str | None = None

  def validate(self) -> None:
    if self.isolation not in _ISOLATION_MODES:
      raise ValueError(f"SandboxConfig.isolation must be one of {_ISOLATION_MODES}, got {self.isolation!r}")
    if not 0 < self.uid_base < 2**31 - 2**22:
      raise ValueError(f"SandboxConfig.uid_base must leave room for 2**22 pids below 2**31, got {self.uid_base}")


@dataclasses.dataclass(frozen=True)
class SandboxResult:
  """Outcome of one run. exit_code is None when the program died from `signal` or was killed at the deadline."""
  stdout: bytes
  stderr: bytes
  exit_code: int | None
  signal: int | None
  timed_out: bool
  elapsed_s: float
  cpu_s: float
  max_rss_kb: int
  stdout_truncated: bool
  stderr_truncated: bool
  isolation: tuple[str, ...]
  warnings: tuple[str, ...]
  token: str  # PRORL_SANDBOX_TOKEN of this run's processes
  run_uid: int | None = None  # the dedicated uid the program ran as, if any

  @property
  def ok(self) -> bool:
    return self.exit_code == 0 and not self.timed_out


@functools.lru_cache(maxsize=1)
def interpreter_dirs() -> tuple[str, ...]:
  """Directories the sandboxed interpreter needs to read (prefixes, stdlib, site-packages, this package)."""
  dirs = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
          os.path.dirname(os.path.realpath(sys.executable)), os.path.dirname(_LAUNCHER)}
  dirs.update(p for p in site.getsitepackages() if os.path.isdir(p))
  return tuple(sorted(os.path.realpath(d) for d in dirs))


def scrubbed_env(sandbox_dir: str, token: str) -> dict[str, str]:
  """The whole environment of the program: nothing from the caller's os.environ survives."""
  return {
      "PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": sandbox_dir, "TMPDIR": sandbox_dir,
      "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "PYTHONIOENCODING": "utf-8", "PYTHONDONTWRITEBYTECODE": "1",
      "PYTHONHASHSEED": "0",  # reproducible set/dict-of-str iteration order, so rewards are reproducible
      "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", TOKEN_VAR: token,
  }


def kill_sandbox_processes(token_prefix: str) -> int:
  """SIGKILLs every readable process whose environment holds a sandbox token starting with `token_prefix`.

  The backstop for process-level (no pid namespace) containment and for workers killed mid-run. Returns how many
  were still alive after a second (0 normally).
  """
  if not token_prefix or not os.path.isdir("/proc"):
    return 0
  needle, killed = f"{TOKEN_VAR}={token_prefix}".encode(), set()
  for _ in range(3):  # a process may fork while we scan; a few passes catch the stragglers
    found = 0
    for name in os.listdir("/proc"):
      if not name.isdigit() or int(name) == os.getpid():
        continue
      try:
        with open(f"/proc/{name}/environ", "rb") as f:
          env = f.read()
      except OSError:
        continue
      if any(entry.startswith(needle) for entry in env.split(b"\0")) and _kill(int(name)):
        killed.add(int(name))
        found += 1
    if not found:
      break
  give_up = time.monotonic() + 1.0
  while killed and time.monotonic() < give_up:  # SIGKILL is asynchronous; return once they are gone
    killed = {p for p in killed if _alive(p)}
    time.sleep(0.005)
  return len(killed)


def cleanup_after(owner_pid: int, tmp_root: str | None = None) -> None:
  """Kills the sandboxed processes and removes the directories of runs that process `owner_pid` started.

  For a process that was killed in the middle of `run_sandboxed` (a reward worker past its timeout).
  """
  kill_sandbox_processes(f"{owner_pid}-")
  root = tmp_root or tempfile.gettempdir()
  prefix = f"{_WORKDIR_PREFIX}{owner_pid}_"
  try:
    names = [n for n in os.listdir(root) if n.startswith(prefix)]
  except OSError:
    return
  for name in names:
    _remove_tree(os.path.join(root, name))


def _check_args(argv, wall_s, files, python_main):
  if not isinstance(argv, (list, tuple)) or not argv or not all(isinstance(a, str) for a in argv):
    raise ValueError(f"argv must be a non-empty list of str, got {argv!r}")
  if not os.path.isabs(argv[0]):
    raise ValueError(f"argv[0] must be an absolute path (the sandbox has a minimal PATH), got {argv[0]!r}")
  if python_main and not argv[0].endswith(".py"):
    raise ValueError(f"with python_main=True, argv[0] must be a Python file, got {argv[0]!r}")
  if not isinstance(wall_s, (int, float)) or not math.isfinite(wall_s) or wall_s <= 0:
    raise ValueError(f"wall_s must be a positive finite number of seconds, got {wall_s!r}")
  for name in files or {}:
    if not isinstance(name, str) or not _FILE_NAME.match(name):
      raise ValueError(f"files keys must be plain file names like 'main.py' (no '/' or '..'), got {name!r}")


def _remove_tree(path):
  def fix(func, p, exc):  # the program may have chmod-ed its own files; we own the parent, so restore and retry
    try:
      os.chmod(os.path.dirname(p), 0o700)
      if os.path.isdir(p) and not os.path.islink(p):
        os.chmod(p, 0o700)
      func(p)
    except OSError:
      pass
  shutil.rmtree(path, onerror=fix)
  if os.path.exists(path):
    _log.warning("sandbox: could not remove %s", path)


def run_sandboxed(argv: Sequence[str], *, wall_s: float, files: Mapping[str, bytes | str] | None = None,
                  stdin: bytes | None = None, limits: SandboxLimits = SandboxLimits(),
                  config: SandboxConfig = SandboxConfig(), expose: Sequence[str] = (),
                  python_main: bool = False) -> SandboxResult:
  """Runs `argv` in a fresh temporary directory (its cwd and HOME), writes `files` there first, feeds `stdin`.

  With python_main=True, argv is [script.py, *args] and the script runs as __main__ inside the launcher's
  interpreter after all limits apply (started with -S: it must add site-packages to sys.path itself if needed),
  which saves one interpreter start-up per run.

  The whole run (start-up included) gets `wall_s` seconds of wall time; CPU time is limited to ceil(wall_s) + 1 per
  process. Returns within wall_s + 0.3 s normally and wall_s + 1.0 s at worst, whatever the program does. Raises
  SandboxError only when the sandbox cannot be built (e.g. isolation="namespaces" on a kernel that refuses), never
  because of the program.
  """
  _check_args(argv, wall_s, files, python_main)
  limits.validate()
  config.validate()
  start = time.monotonic()
  token = f"{os.getpid()}-{secrets.token_hex(8)}"
  workdir = tempfile.mkdtemp(prefix=f"{_WORKDIR_PREFIX}{os.getpid()}_", dir=config.tmp_root)
  status_r, status_w = os.pipe()
  stdin_file = None
  try:
    for name, content in (files or {}).items():
      with open(os.path.join(workdir, name), "wb") as f:
        f.write(content.encode() if isinstance(content, str) else content)
    if stdin is not None:
      stdin_file = tempfile.TemporaryFile(dir=config.tmp_root)
      stdin_file.write(stdin)
      stdin_file.seek(0)
    env = scrubbed_env(workdir, token)
    cfg = {
        "argv": list(argv), "env": env, "cwd": workdir, "deadline": start + wall_s, "status_fd": status_w,
        "python_main": bool(python_main),
        "parent_pid": os.getpid(), "isolation": config.isolation, "drop_root": config.drop_root,
        "uid_base": config.uid_base, "tmpfs_bytes": limits.tmpfs_bytes, "hide": [os.path.expanduser("~")],
        "expose": sorted(set(interpreter_dirs()) | {os.path.realpath(p) for p in expose}),
        "limits": {"cpu_s": int(math.ceil(wall_s)) + 1, "memory_bytes": limits.memory_bytes,
                   "file_size_bytes": limits.file_size_bytes, "open_files": limits.open_files,
                   "processes": limits.processes, "stack_bytes": limits.stack_bytes},
    }
    proc = subprocess.Popen(
        [sys.executable, "-s", "-S", "-B", "-P", _LAUNCHER, json.dumps(cfg)], cwd=workdir, env=env,
        stdin=stdin_file if stdin_file is not None else subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, pass_fds=(status_w,), process_group=0, close_fds=True)
    os.close(status_w)
    status_w = -1
    streams = _collect(proc, status_r, start + wall_s + _KILL_GRACE_S, limits)
  except BaseException:
    _remove_tree(workdir)
    raise
  finally:
    if status_w >= 0:
      os.close(status_w)
    os.close(status_r)
    if stdin_file is not None:
      stdin_file.close()
  elapsed = time.monotonic() - start
  status = {}
  for line in streams["status"].decode(errors="replace").splitlines():
    try:
      msg = json.loads(line)
    except ValueError:
      continue
    if "init_pid" not in msg:
      status = msg
  isolation = tuple(status.get("isolation", ()))
  if "pidns" not in isolation:
    kill_sandbox_processes(token)  # nothing guarantees the program's descendants died with it
  _remove_tree(workdir)
  if proc.returncode in (_sandbox_child.EXIT_SETUP_FAILED, _sandbox_child.EXIT_EXEC_FAILED):
    raise SandboxError(status.get("error") or "sandbox launcher failed: " + streams["stderr"].decode(errors="replace"))
  warnings = tuple(status.get("warnings", ()))
  _warn_once(warnings)
  timed_out = bool(status.get("timed_out")) or streams["killed"]
  return SandboxResult(
      stdout=streams["stdout"], stderr=streams["stderr"],
      exit_code=None if timed_out else status.get("exit_code"), signal=status.get("signal"),
      timed_out=timed_out, elapsed_s=elapsed, cpu_s=float(status.get("cpu_s", 0.0)),
      max_rss_kb=int(status.get("max_rss_kb", 0)), stdout_truncated=streams["stdout_truncated"],
      stderr_truncated=streams["stderr_truncated"], isolation=isolation, warnings=warnings, token=token,
      run_uid=status.get("run_uid"))


_warned: set[str] = set()


def _warn_once(warnings):
  for w in warnings:
    if w not in _warned:
      _warned.add(w)
      _log.warning("sandbox: %s (see prorl_jax/rewards/SANDBOX.md)", w)


def _collect(proc, status_r, hard_deadline, limits):
  """Reads stdout/stderr/status until EOF, the launcher's exit (+ a short drain), or the hard deadline."""
  caps = {proc.stdout.fileno(): ("stdout", limits.stdout_bytes), proc.stderr.fileno(): ("stderr", limits.stderr_bytes),
          status_r: ("status", 1 << 20)}
  out = {"stdout": bytearray(), "stderr": bytearray(), "status": bytearray(), "stdout_truncated": False,
         "stderr_truncated": False, "killed": False}
  sel = selectors.DefaultSelector()
  for fd in caps:
    sel.register(fd, selectors.EVENT_READ)
  exited_at = killed_at = None
  try:
    while sel.get_map():
      now = time.monotonic()
      if exited_at is None and proc.poll() is not None:
        exited_at = now
      if exited_at is not None and now > exited_at + _DRAIN_S:
        break
      if killed_at is None and now >= hard_deadline:
        # Kill init, so the launcher exits only after the kernel has killed the whole pid namespace.
        init_pid = _init_pid(out["status"])
        if init_pid is None or not _kill(init_pid):
          _killpg(proc)
        killed_at, out["killed"] = now, True
      if killed_at is not None and exited_at is None and now > killed_at + _REAP_S:
        _killpg(proc)
        break
      wait = min(0.05 if exited_at is None else _DRAIN_S, max(hard_deadline - now, 0.0) or _DRAIN_S)
      for key, _ in sel.select(wait):
        data = os.read(key.fd, 1 << 16)
        if not data:
          sel.unregister(key.fd)
          continue
        name, cap = caps[key.fd]
        room = cap - len(out[name])
        out[name] += data[:max(room, 0)]
        if len(data) > room:
          out[f"{name}_truncated"] = True
  finally:
    sel.close()
    if proc.poll() is None:
      _killpg(proc)
    proc.wait()
    proc.stdout.close()
    proc.stderr.close()
  return {k: bytes(v) if isinstance(v, bytearray) else v for k, v in out.items()}


def _init_pid(status: bytearray) -> int | None:
  for line in bytes(status).splitlines():
    try:
      return int(json.loads(line)["init_pid"])
    except (ValueError, KeyError, TypeError):
      continue
  return None


def _kill(pid: int) -> bool:
  try:
    os.kill(pid, signal.SIGKILL)
    return True
  except (ProcessLookupError, PermissionError):
    return False


def _alive(pid: int) -> bool:
  try:
    with open(f"/proc/{pid}/stat", "rb") as f:
      return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
  except (OSError, IndexError):
    return False


def _killpg(proc):
  try:
    os.killpg(proc.pid, signal.SIGKILL)
  except (ProcessLookupError, PermissionError):
    pass


@functools.lru_cache(maxsize=None)
def isolation_report(config: SandboxConfig = SandboxConfig()) -> tuple[tuple[str, ...], tuple[str, ...]]:
  """(isolation features, warnings) that `config` achieves on this machine, from one trivial run (cached)."""
  res = run_sandboxed([sys.executable, "-I", "-S", "-c", "pass"], wall_s=10.0, config=config)
  return res.isolation, res.warnings
