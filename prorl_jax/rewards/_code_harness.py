"""Test harness that runs INSIDE the sandbox: compiles the solution once, runs each test in a fresh fork.

Run by `code_reward` as `_code_harness.py spec.json solution.py` in the sandbox directory, as __main__ of the
sandbox launcher's interpreter (`run_sandboxed(..., python_main=True)`), after every limit applies.
The expected outputs never enter the sandbox: this prints, one JSON object per line on stdout, what the program
produced, and the caller compares. User code runs only in forked children whose stdout is a capture file, so it
cannot write to this result channel. Each child installs a Python audit hook (defence in depth under the kernel
isolation, the main line of defence without it): no network sockets, no writes outside the sandbox directory, no
signals to foreign processes, and no new processes unless the kernel bounds and reaps them (the launcher says so in
PRORL_SANDBOX_ISOLATION).

Lines: {"event": "compile", "ok": bool, "error": str}, then per test {"event": "test", "i", "status", "output",
"truncated", "error", "elapsed_s"}, then {"event": "done"}. status is "ok", "error" (exception / non-JSON return
value / missing function) or "crashed" (killed by a signal, e.g. a resource limit).
"""

import gc
import json
import os
import re
import signal
import sys
import threading
import time

# The Eurus-2-RL / PRIME (APPS) checker execs every solution after this prelude; LeetCode-style solutions rely on
# it (`List[int]` without an import), so we keep it for comparable rewards.
PRELUDE = (
    "from string import *\nfrom re import *\nfrom datetime import *\nfrom collections import *\n"
    "from heapq import *\nfrom bisect import *\nfrom copy import *\nfrom math import *\nfrom random import *\n"
    "from statistics import *\nfrom itertools import *\nfrom functools import *\nfrom operator import *\n"
    "from io import *\nfrom sys import *\nfrom json import *\nfrom builtins import *\nfrom typing import *\n"
    "import string\nimport re\nimport datetime\nimport collections\nimport heapq\nimport bisect\nimport copy\n"
    "import math\nimport random\nimport statistics\nimport itertools\nimport functools\nimport operator\n"
    "import io\nimport sys\nimport json\nsys.setrecursionlimit(6*10**5)\n")

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC
_PATH_EVENTS = {  # event -> positions of path arguments that must stay inside the sandbox
    "os.mkdir": (0,), "os.rmdir": (0,), "os.remove": (0,), "os.rename": (0, 1), "os.symlink": (1,),
    "os.link": (0, 1), "os.truncate": (0,), "os.chmod": (0,), "os.chown": (0,), "os.utime": (0,),
    "os.chflags": (0,), "os.lchflags": (0,), "os.mkfifo": (0,), "os.mknod": (0,), "shutil.rmtree": (0,),
    "os.setxattr": (0,), "os.removexattr": (0,),
}
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)  # a program may leave symlinks where the next test's files go
_PROCESS_EVENTS = {"os.fork", "os.forkpty", "os.system", "os.exec", "os.posix_spawn", "os.spawn",
                   "subprocess.Popen", "pty.spawn"}
_DEVICES = {"/dev/null", "/dev/zero", "/dev/full"}
_PROC_PRIVATE = re.compile(r"^/proc/(\d+)/(environ|mem|fd|map_files|root|cwd|exe)(/|$)")


def _install_guard(root, block_processes):
  """Audit hook for the user code's process: a policy, not a boundary (ctypes or a C extension bypass it)."""
  root = os.path.realpath(root)
  me = os.getpid()

  def inside(path):
    if isinstance(path, int):
      return True  # an already open descriptor
    p = os.path.realpath(os.fsdecode(os.fspath(path)))
    return p == root or p.startswith(root + "/") or p in _DEVICES

  def refuse(what):
    raise PermissionError(f"sandbox: {what} is not allowed")

  def foreign_proc(path):
    if isinstance(path, int):
      return False
    p = os.fsdecode(os.fspath(path))
    for q in (os.path.abspath(p), os.path.realpath(p)):
      m = _PROC_PRIVATE.match(q)
      if m and int(m.group(1)) != me:
        return True
    return False

  def hook(event, args):
    if event == "open":
      path, mode, flags = args
      writes = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
          isinstance(flags, int) and flags > 0 and flags & _WRITE_FLAGS)
      if writes and path is not None and not inside(path):
        refuse(f"writing {path!r} (outside the sandbox directory)")
      if path is not None and foreign_proc(path):
        refuse(f"opening {path!r} (another process's private state)")
    elif event in _PATH_EVENTS:
      for i in _PATH_EVENTS[event]:
        if i < len(args) and args[i] is not None and not inside(args[i]):
          refuse(f"{event} on {args[i]!r} (outside the sandbox directory)")
    elif event == "socket.__new__":
      import socket  # noqa: PLC0415 -- only loaded when the program itself touches sockets
      if args[1] != socket.AF_UNIX:
        refuse("network access")
    elif event in ("socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg"):
      refuse("network access")
    elif event in ("os.kill", "os.killpg"):
      target = args[0]
      if event == "os.killpg" or target <= 0 or (target != me and not _is_child(target, me)):
        refuse(f"{event}({target}) (only this process and its own children may be signalled)")
    elif event in _PROCESS_EVENTS and block_processes:
      refuse(f"{event} (starting processes needs the kernel isolation, unavailable here)")

  sys.addaudithook(hook)


def _block_processes():
  """New processes are allowed only where the kernel bounds them (RLIMIT_NPROC bites) and kills them at the end."""
  iso = set(os.environ.get("PRORL_SANDBOX_ISOLATION", "").split(","))
  return not ("pidns" in iso and ("userns" in iso or "dedicated_uid" in iso))


def _is_child(pid, parent):
  try:
    with open(f"/proc/{pid}/stat", "rb") as f:
      return int(f.read().rsplit(b")", 1)[1].split()[1]) == parent
  except (OSError, ValueError, IndexError):
    return False


def _children(pid):
  try:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
      return [int(x) for x in f.read().split()]
  except OSError:
    return []


def _reap_all(pgid):
  """Kills what a test left behind: its process group, and (we are a subreaper) orphans re-parented to us."""
  me = os.getpid()
  for _ in range(1000):
    try:
      os.killpg(pgid, signal.SIGKILL)
    except OSError:
      pass
    kids = _children(me)
    for kid in kids:
      try:
        os.kill(kid, signal.SIGKILL)
      except OSError:
        pass
    try:
      while os.waitpid(-1, os.WNOHANG)[0] > 0:
        pass
    except ChildProcessError:
      return
    if not kids:
      time.sleep(0.001)


def _finish_threads():
  main = threading.main_thread()
  for t in threading.enumerate():  # solutions often run main() in a thread with a bigger stack
    if t is not main and not t.daemon:
      t.join()


def _flush():
  for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
    try:
      stream.flush()
    except Exception:  # noqa: BLE001 -- the program may have closed or replaced them
      pass


def _run_one(spec, code, namespace, i, root):
  """In the forked child: redirect stdio, run test i, exit. Never returns."""
  rc = 0
  try:
    os.setpgid(0, 0)
    stdin_fd = os.open(f".in_{i}", os.O_RDONLY | _NOFOLLOW)
    out_fd = _create(f".out_{i}")
    err_fd = _create(f".err_{i}")
    for src, dst in ((stdin_fd, 0), (out_fd, 1), (err_fd, 2)):
      os.dup2(src, dst)
      os.close(src)
    _install_guard(root, _block_processes())
    ns = dict(namespace)
    if spec["mode"] == "stdio":
      ns["__name__"] = "__main__"
      try:
        exec(code, ns)  # noqa: S102 -- running the untrusted program is the point; the sandbox contains it
        _finish_threads()
      except SystemExit:
        pass  # APPS/PRIME treat exit() like a normal end and compare what was printed
    else:
      ns["__name__"] = "solution"
      exec(code, ns)  # noqa: S102
      sol = ns.get("Solution")
      if isinstance(sol, type) and hasattr(sol, spec["fn_name"]):
        fn = getattr(sol(), spec["fn_name"])
      elif callable(ns.get(spec["fn_name"])):
        fn = ns[spec["fn_name"]]
      else:
        raise NameError(f"no function or Solution method named {spec['fn_name']!r}")
      with open(f".in_{i}", "rb") as f:
        args = json.loads(f.read())
      if args and isinstance(args[0], dict) and args[0] and all(_is_int(k) for k in args[0]):
        args[0] = {int(k): v for k, v in args[0].items()}  # JSON turned int keys into str; PRIME turns them back
      value = fn(*args)
      try:
        text = json.dumps(value)
      except (TypeError, ValueError) as e:
        raise TypeError(f"return value of type {type(value).__name__} is not JSON-serialisable: {e}") from None
      with os.fdopen(_create(f".ret_{i}"), "w") as f:
        f.write(text)
  except BaseException:  # noqa: BLE001 -- any failure of the program is a failed test
    rc = 1
    try:
      import traceback  # noqa: PLC0415 -- only failing tests pay for it
      traceback.print_exc()
    except BaseException:  # noqa: BLE001
      pass
  _flush()
  os._exit(rc)


def _is_int(key):
  return isinstance(key, str) and key.lstrip("-").isdigit()


def _create(path):
  try:
    os.unlink(path)
  except OSError:
    pass
  return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o600)


def _read_capped(path, cap):
  try:
    with os.fdopen(os.open(path, os.O_RDONLY | _NOFOLLOW), "rb") as f:
      data = f.read(cap + 1)
    os.unlink(path)
  except OSError:
    return "", False
  return data[:cap].decode("utf-8", errors="replace"), len(data) > cap


def _emit(obj):
  sys.stdout.write(json.dumps(obj) + "\n")
  sys.stdout.flush()


def main():
  spec_path, solution_path = sys.argv[1], sys.argv[2]
  with open(spec_path) as f:
    spec = json.load(f)
  sys.path.extend(p for p in spec.get("sys_path", ()) if p not in sys.path)
  with open(solution_path, encoding="utf-8", errors="replace") as f:
    source = f.read()
  try:
    code = compile(source, "solution.py", "exec")
  except (SyntaxError, ValueError, RecursionError, MemoryError, OverflowError) as e:
    _emit({"event": "compile", "ok": False, "error": f"{type(e).__name__}: {e}"})
    return
  _emit({"event": "compile", "ok": True, "error": ""})
  namespace = {"__builtins__": __builtins__}
  exec(PRELUDE, namespace)  # noqa: S102 -- trusted; done once here so every forked test inherits it
  try:
    import ctypes  # noqa: PLC0415
    ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER: orphans of a test come back to us
  except Exception:  # noqa: BLE001 -- not Linux: process groups still cover the common cases
    pass
  gc.freeze()  # the forked tests then do not copy-on-write our heap when their collector runs
  root = os.getcwd()
  for i, test_input in enumerate(spec["inputs"]):  # all written before any user code runs
    with os.fdopen(_create(f".in_{i}"), "w", encoding="utf-8") as f:
      f.write(test_input if spec["mode"] == "stdio" else json.dumps(test_input))
  for i, cap in enumerate(spec["output_caps"]):
    _flush()
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:
      _run_one(spec, code, namespace, i, root)
    _, wstatus = os.waitpid(pid, 0)
    elapsed = time.monotonic() - start
    _reap_all(pid)
    output, truncated = _read_capped(f".out_{i}", cap)
    err, _ = _read_capped(f".err_{i}", 1 << 16)
    if spec["mode"] == "call":
      output, truncated = _read_capped(f".ret_{i}", cap)
    if os.WIFSIGNALED(wstatus):
      status, error = "crashed", f"killed by signal {os.WTERMSIG(wstatus)} " + err[-500:]
    elif os.WEXITSTATUS(wstatus) != 0:
      status, error = "error", err[-2000:]
    else:
      status, error = "ok", ""
    try:
      os.unlink(f".in_{i}")
    except OSError:
      pass
    _emit({"event": "test", "i": i, "status": status, "output": output, "truncated": truncated, "error": error,
           "elapsed_s": elapsed})
  _emit({"event": "done"})


if __name__ == "__main__":
  main()
