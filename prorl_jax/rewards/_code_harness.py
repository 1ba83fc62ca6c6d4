"""Test harness that runs INSIDE the sandbox: compiles the solution once, runs each test in a fresh fork.

Run by `code_reward` as `_code_harness.py spec.json solution.py` in the sandbox directory, as __main__ of the
sandbox launcher's interpreter (`run_sandboxed(..., python_main=True)`), after every limit applies.
The expected outputs never enter the sandbox: this prints, one JSON object per line on stdout, what the program
produced, and the caller compares. User code runs only in forked children whose stdout is a capture file, so it
cannot write to this result channel. Each child installs a Python audit hook (defence in depth under the kernel
isolation, the main line of defence without it): no network sockets, no writes outside the sandbox directory, no
signals to foreign processes, and no new processes unless the kernel bounds and reaps them (the launcher says so in
PRORL_SANDBOX_ISOLATION).

Modes: "stdio" and "call" (input/output tests), and "program" (test programs: HumanEval's check(candidate),
MBPP's asserts; see the section comment above `_make_plain` for how their verdicts stay honest).

Lines: {"event": "compile", "ok": bool, "error": str}, then per test {"event": "test", "i", "status", "output",
"truncated", "error", "elapsed_s"}, then {"event": "done"}. status is "ok", "error" (exception / non-JSON return
value / missing function) or "crashed" (killed by a signal, e.g. a resource limit). In "program" mode a test line
has "values" (per straight-line assert, the values it compares, as tagged JSON; null unless the test completed
with valid records) instead of "truncated", and status may also be "wrong_answer" (an assert in the test code
failed), "timeout" (the test ran past its share of the budget) or "invalid_record".
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


# ---- test programs: HumanEval's check(candidate), MBPP's assert statements -----------------------------------
#
# Here the tests run in the same process as the program (they call its functions), so the program could tamper
# with them. What keeps a verdict honest (SANDBOX.md, "Test programs"):
#   * the caller rewrote each straight-line assert into a report of the value(s) it compares, and kept the
#     comparison and the expected literal: those never enter the sandbox, so a reported value passes only if it is
#     the right answer. Values travel as plain data read through builtin base types (`_make_plain`), so an object
#     that claims equality (__eq__ returning True) or truth reports what it holds, not what it claims;
#   * the test code is compiled here with optimize=0 (asserts stay whatever the interpreter's flags) and runs in its
#     own namespace, with builtins and the modules it imports captured before the program runs;
#   * a test counts as completed only with a record holding a per-test nonce, written after the test code returned,
#     by code whose every name is a local bound before the program started;
#   * while the program runs, an audit hook refuses frame and gc introspection, tracing, replacing a function's
#     __code__, ctypes' memory access and /proc/*/mem, the ways to reach those locals or the nonce from Python.
# A missing, repeated or malformed record is a failed test.

_RECORD_CAP = 1 << 20  # bytes of records one test may write (its reported values); more makes the test fail
_PER_TEST_RESERVE_S = 0.5  # a test may use the remaining budget less this much kept for each test after it
_PLAIN_NODES = 1 << 20  # largest value (in elements) a test may compare
_PLAIN_DEPTH = 100
_MEM_PATH = re.compile(r"/proc/(self|thread-self|\d+)(/task/\d+)?/mem")


def _make_plain():
  """plain(value) -> an equal value built only of exact builtin types, without calling the value's own methods.

  bool, int, float, complex, str, bytes, bytearray, None, Ellipsis, range, list, tuple, set, frozenset and dict,
  and their subclasses, are read through the builtin base type (a list subclass's __iter__, an int subclass's
  __eq__ never run): a Counter becomes a dict, a namedtuple a tuple. A numpy scalar becomes its .item(). Anything
  else raises TypeError, and the test fails: tests compare data, not objects that say they are equal.
  Every name it uses is bound here, so a program that later rebinds builtins or this module's globals does not
  change it.
  """
  exact = frozenset({bool, int, float, str, bytes, type(None), type(...), range})
  int_t, float_t, str_t, complex_t, bytes_t, bytearray_t = int, float, str, complex, bytes, bytearray
  list_t, tuple_t, set_t, frozenset_t, dict_t = list, tuple, set, frozenset, dict
  containers = (list, tuple, set, frozenset, dict)
  btype, isinst, getattr_, type_error, ident = type, isinstance, getattr, TypeError, id
  as_int, as_float, as_str, as_bytes = int.__int__, float.__float__, str.__str__, bytes.__getitem__
  real, imag, view, whole = complex.real.__get__, complex.imag.__get__, memoryview, slice(None)
  iter_list, iter_tuple, iter_set, iter_frozenset, items = (list.__iter__, tuple.__iter__, set.__iter__,
                                                             frozenset.__iter__, dict.items)
  max_nodes, max_depth, nodes_left = _PLAIN_NODES, _PLAIN_DEPTH, [0]

  def copy(value, depth, path):
    t = btype(value)
    if t in exact:
      return value
    nodes_left[0] -= 1
    if nodes_left[0] < 0 or depth > max_depth:
      raise type_error("the value is too large or too deeply nested to compare")
    if isinst(value, int_t):
      return as_int(value)
    if isinst(value, float_t):
      return as_float(value)
    if isinst(value, str_t):
      return as_str(value)
    if isinst(value, containers):
      key = ident(value)
      if key in path:
        raise type_error("the value contains itself")
      path.add(key)
      d = depth + 1
      if isinst(value, dict_t):
        out = {copy(k, d, path): copy(v, d, path) for k, v in items(value)}
      elif isinst(value, list_t):
        out = [copy(v, d, path) for v in iter_list(value)]
      elif isinst(value, tuple_t):
        out = tuple_t([copy(v, d, path) for v in iter_tuple(value)])
      elif isinst(value, set_t):
        out = set_t([copy(v, d, path) for v in iter_set(value)])
      else:
        out = frozenset_t([copy(v, d, path) for v in iter_frozenset(value)])
      path.discard(key)
      return out
    if isinst(value, complex_t):
      return complex_t(real(value), imag(value))
    if isinst(value, bytes_t):
      return as_bytes(value, whole)
    if isinst(value, bytearray_t):
      return bytearray_t(view(value))
    if getattr_(t, "__module__", None) == "numpy" and getattr_(value, "item", None) is not None:
      return copy(value.item(), depth + 1, path)  # numpy scalars (and size-1 arrays); larger arrays raise
    raise type_error(f"a test compared a value of type {t.__name__!r}; tests compare plain data")

  def plain(value):
    nodes_left[0] = max_nodes
    return copy(value, 0, set_t())

  return plain


def _make_truth(plain):
  """truth(value) -> the verdict of `assert value`: the truth of its plain copy, or, for other objects (a re.Match,
  a deque), the builtin default or the C code that decides it; an object whose own Python __bool__ / __len__ would
  decide fails the test. Bound like `plain`."""
  get_mro, get_dict = type.__dict__["__mro__"].__get__, type.__dict__["__dict__"].__get__
  btype, slot_wrapper, type_error = type, type(object.__init__), TypeError

  def truth(value):
    try:
      return not not plain(value)  # noqa: SIM208 -- `bool` would be a name lookup
    except type_error:
      pass
    for cls in get_mro(btype(value)):
      attrs = get_dict(cls)
      for name in ("__bool__", "__len__"):
        if name in attrs and btype(attrs[name]) is not slot_wrapper:
          raise type_error(f"a test asserted a {btype(value).__name__!r}, whose truth its own code decides; tests "
                           "assert plain data")
    return not not value  # noqa: SIM208

  return truth


def _make_dump():
  """dump(plain value) -> tagged JSON text the caller decodes (code_reward.decode_value): ["i", hex], ["l", [...]]..."""
  btype, quote, hexf, fmt, join = type, json.encoder.encode_basestring_ascii, float.hex, format, ",".join
  items = dict.items
  bool_t, int_t, float_t, complex_t, str_t, bytes_t, bytearray_t, range_t, dict_t = (bool, int, float, complex, str,
                                                                                    bytes, bytearray, range, dict)
  tags = {list: "l", tuple: "t", set: "S", frozenset: "F"}

  def dump(v):
    t = btype(v)
    if v is None:
      return '["n"]'
    if v is ...:
      return '["e"]'
    if t is bool_t:
      return '["b",1]' if v else '["b",0]'
    if t is int_t:
      return '["i","' + fmt(v, "x") + '"]'
    if t is float_t:
      return '["f","' + hexf(v) + '"]'
    if t is complex_t:
      return '["c","' + hexf(v.real) + '","' + hexf(v.imag) + '"]'
    if t is str_t:
      return '["s",' + quote(v) + "]"
    if t is bytes_t:
      return '["y","' + v.hex() + '"]'
    if t is bytearray_t:
      return '["Y","' + v.hex() + '"]'
    if t is range_t:
      return '["r","' + fmt(v.start, "x") + '","' + fmt(v.stop, "x") + '","' + fmt(v.step, "x") + '"]'
    if t is dict_t:
      return '["d",[' + join(["[" + dump(k) + "," + dump(x) + "]" for k, x in items(v)]) + "]]"
    return '["' + tags[t] + '",[' + join([dump(x) for x in v]) + "]]"

  return dump


def _make_introspection_guard(protected=()):
  """Audit hook for a test program's process, armed before the program runs (see the section comment).

  protected: globals dicts (this module's, the real modules the tests import) whose functions' __code__,
  __defaults__ and __kwdefaults__ may not be replaced. Other functions may be (asyncio's types.coroutine does it).
  """
  frame_events = frozenset({"sys._getframe", "sys._current_frames", "sys._current_exceptions"})
  refused = frozenset({"gc.get_objects", "gc.get_referrers", "gc.get_referents", "sys.settrace", "sys.setprofile",
                       "ctypes.dlsym", "ctypes.dlsym/handle", "ctypes.cdata", "ctypes.cdata/buffer",
                       "ctypes.addressof", "ctypes.string_at", "ctypes.wstring_at", "ctypes.call_function"})
  frame_attrs = frozenset({"tb_frame", "gi_frame", "cr_frame", "ag_frame", "f_back"})
  mem_path, normpath, getcwd = _MEM_PATH.fullmatch, os.path.normpath, os.getcwd
  fsdecode, fspath, isinst, int_t = os.fsdecode, os.fspath, isinstance, int
  value_error, permission_error, runtime_error = ValueError, PermissionError, RuntimeError
  protected, getattr_ = tuple(protected), getattr
  function_parts = frozenset({"__code__", "__defaults__", "__kwdefaults__"})

  def hook(event, args):
    if event in frame_events:  # ValueError is what the stdlib expects when the stack is not that deep
      raise value_error("sandbox: the call stack is not visible while tests run")
    if event in refused:
      raise permission_error(f"sandbox: {event} is not allowed while tests run")
    if event == "sys.addaudithook":
      raise runtime_error("sandbox: no audit hooks while tests run")  # RuntimeError: refused quietly
    if event == "object.__getattr__" and args[1] in frame_attrs:
      raise permission_error(f"sandbox: {args[1]} is not readable while tests run")
    if event == "object.__setattr__" and args[1] in function_parts:
      owner = getattr_(args[0], "__globals__", None)
      for namespace in protected:
        if owner is namespace:
          raise permission_error(f"sandbox: replacing {args[1]} of the harness's or the tests' functions is not "
                                 "allowed while tests run")
    if event == "open" and args[0] is not None and not isinst(args[0], int_t):
      path = fsdecode(fspath(args[0]))
      if mem_path(normpath(path if path.startswith("/") else getcwd() + "/" + path)):
        raise permission_error("sandbox: process memory is not readable while tests run")

  return hook


def _snapshot_modules(names):
  """{name: a module object holding a copy of the module's attributes}, for each of `names` that imports now.

  The test code's `import` returns these, so a program that rebinds `math.isclose` does not change the tests'.
  """
  module_type, snapshots = type(sys), {}
  for name in names:
    try:
      __import__(name)
      real = sys.modules[name]
    except BaseException:  # noqa: BLE001 -- the test's own import then fails the same way, in the test
      continue
    snap = module_type(name)
    snap.__dict__.update(real.__dict__)
    snapshots[name] = snap
  return snapshots


def _make_importer(snapshots, real_import):
  """The tests' __import__: the snapshot for `import name` / `from name import x` when there is one, else the real
  import (`import a.b` binds the snapshot of `a` after importing a.b)."""
  get = snapshots.get

  def test_import(name, globals=None, locals=None, fromlist=(), level=0):  # noqa: A002 -- __import__'s signature
    if level == 0 and (fromlist or "." not in name):
      snap = get(name)
      if snap is not None:
        return snap
    module = real_import(name, globals, locals, fromlist, level)
    return get(name.partition(".")[0], module) if level == 0 and not fromlist else module

  return test_import


def _make_namespace_builder(names, entry_point, builtins_copy, snapshots, plain, truth, dump):
  """build(program_namespace, record_fd) -> the globals the test code runs in.

  Built before the program runs and using only names bound here: the tests see the builtins as they were before
  the program ran (a program's own `len` or rebound `builtins.abs` does not reach them), the program's values for
  the other names they use (its functions), the entry point as __prorl_entry__, and the report/plain/truth helpers.
  """
  names, isinst, module_type, write, name_error = tuple(names), isinstance, type(sys), os.write, NameError
  get_snapshot, join, as_text = snapshots.get, ",".join, int.__repr__

  def build(program_ns, record_fd):
    def report(k, *values):
      data = ('["v",' + as_text(k) + ",[" + join([dump(plain(v)) for v in values]) + "]]\n").encode()
      while data:
        data = data[write(record_fd, data):]

    ns = {"__builtins__": builtins_copy, "__name__": "__prorl_tests__"}
    for name in names:
      if name.startswith("__") or name not in program_ns or (name in builtins_copy and name != entry_point):
        continue
      value = program_ns[name]
      if isinst(value, module_type):
        value = get_snapshot(name, value)
      ns[name] = value
    if entry_point is not None:
      if entry_point not in program_ns:
        raise name_error(f"the program defines no {entry_point!r}")
      ns["__prorl_entry__"] = program_ns[entry_point]
    ns["__prorl_report__"], ns["__prorl_plain__"], ns["__prorl_truth__"] = report, plain, truth
    return ns

  return build


def _run_program_test(code, namespace, setup_code, test_code, build, protected, record_fd, done, root, i):
  """In the forked child: limits and guards, then `_judge` runs the program, the setup and test i. Never returns."""
  try:
    os.setpgid(0, 0)
    for path, dst in (("/dev/null", 0), (f".out_{i}", 1), (f".err_{i}", 2)):
      fd = os.open(path, os.O_RDONLY) if dst == 0 else _create(path)
      os.dup2(fd, dst)
      os.close(fd)
    _install_guard(root, _block_processes())
    sys.addaudithook(_make_introspection_guard(protected))
    program_ns = dict(namespace)
    program_ns["__name__"] = "solution"  # `if __name__ == "__main__":` blocks do not run, as in HumanEval's harness
  except BaseException:  # noqa: BLE001
    os._exit(1)
  _judge(code, program_ns, setup_code, test_code, build, record_fd, done, _flush)


def _judge(code, program_ns, setup_code, test_code, build, record_fd, done, flush, *, run=exec, exit_now=os._exit,
           write=os.write, base_exc=BaseException, assertion=AssertionError, name_of=type, text=str):
  """Runs the program, the setup and the test; writes `done` only if the test code returned. Never returns.

  Exit status: 0 completed, 2 an assertion failed, 1 anything else raised. Every name here is a parameter, bound
  before the program starts (tests check that this function reads no global): the program can rebind builtins,
  module attributes and this module's globals, but not the locals of a running function.
  """
  rc, failure = 1, None
  try:
    run(code, program_ns)
    tests_ns = build(program_ns, record_fd)
    run(setup_code, tests_ns)
    run(test_code, tests_ns)
    rc = 0
  except assertion as e:
    rc, failure = 2, e
  except base_exc as e:  # noqa: BLE001 -- SystemExit included: exiting is not passing
    failure = e
  if rc == 0:
    write(record_fd, done)
  else:
    try:
      write(2, (name_of(failure).__name__ + ": " + text(failure))[-2000:].encode("utf-8", "replace"))
    except base_exc:  # noqa: BLE001 -- a hostile __str__; the status says enough
      pass
  try:
    flush()
  except base_exc:  # noqa: BLE001
    pass
  exit_now(rc)


def _test_limit(remaining, tests_left):
  """Seconds test may run: the remaining budget less a reserve for each later test (at most its fair share)."""
  reserve = min(remaining / tests_left, _PER_TEST_RESERVE_S)
  return remaining - (tests_left - 1) * reserve


def _wait(pid, deadline):
  """(timed_out, wait status) of child `pid`, SIGKILLing its process group at `deadline` (time.monotonic())."""
  import select  # noqa: PLC0415 -- only the test-program mode waits with a deadline
  try:
    pidfd = os.pidfd_open(pid)
  except (AttributeError, OSError):
    pidfd = None
  try:
    while True:
      done, wstatus = os.waitpid(pid, os.WNOHANG)
      if done:
        return False, wstatus
      remaining = deadline - time.monotonic()
      if remaining <= 0:
        for kill in (os.killpg, os.kill):
          try:
            kill(pid, signal.SIGKILL)
          except OSError:
            pass
        return True, os.waitpid(pid, 0)[1]
      if pidfd is not None:
        select.select([pidfd], [], [], remaining)
      else:
        time.sleep(min(remaining, 0.002))
  finally:
    if pidfd is not None:
      os.close(pidfd)


def _check_records(data, done, slots):
  """(reported values per slot, "") for a completed test's records, or (None, why they are not valid).

  Valid: one line ["v", k, [values]] per slot k = 0, 1, ... in order, then the test's `done` line, nothing else.
  """
  if len(data) > _RECORD_CAP:
    return None, f"the test reported more than {_RECORD_CAP} bytes"
  if not data.endswith(done):
    return None, "records after the completion record" if done in data else "no completion record"
  lines = data[:-len(done)].split(b"\n")
  if done in data[:-len(done)] or lines.pop():
    return None, "records that are not the harness's"
  values = []
  for line in lines:
    try:
      kind, k, reported = json.loads(line)
    except (ValueError, TypeError, RecursionError):
      return None, "records that are not the harness's"
    if kind != "v" or type(k) is not int or k != len(values) or not isinstance(reported, list):
      return None, "records that are not the harness's"
    values.append(reported)
  if len(values) != slots:
    return None, f"{len(values)} reported asserts of {slots}"
  return values, ""


def _compile_tests(spec):
  """(setup code, [test code]): compiled here, before any program runs, with optimize=0 so that their asserts
  stay whatever the interpreter's -O / PYTHONOPTIMIZE."""
  setup = compile(spec["setup"], "<setup>", "exec", dont_inherit=True, optimize=0)
  return setup, [compile(t["source"], f"<test {i}>", "exec", dont_inherit=True, optimize=0)
                 for i, t in enumerate(spec["tests"])]


def _run_programs(spec, code, namespace, root):
  """The test-program mode: each test in a fresh fork running the program, the setup and the test."""
  import builtins  # noqa: PLC0415
  setup_code, test_codes = _compile_tests(spec)
  snapshots = _snapshot_modules(spec["imports"])
  builtins_copy = dict(builtins.__dict__)
  builtins_copy["__import__"] = _make_importer(snapshots, builtins.__import__)
  plain = _make_plain()
  build = _make_namespace_builder(spec["names"], spec.get("entry_point"), builtins_copy, snapshots, plain,
                                  _make_truth(plain), _make_dump())
  protected = (globals(),) + tuple(vars(sys.modules[name]) for name in snapshots if name in sys.modules)
  deadline, n = spec["deadline"], len(test_codes)
  for i, test in enumerate(spec["tests"]):
    remaining = deadline - time.monotonic()
    if remaining <= 0.01:
      _emit({"event": "test", "i": i, "status": "timeout", "values": None, "error": "no time left", "output": "",
             "elapsed_s": 0.0})
      continue
    done = f'["done","{os.urandom(16).hex()}"]\n'.encode()
    record_path = f".rec_{i}"
    try:
      os.unlink(record_path)  # an earlier test's program may have left something there
    except OSError:
      pass
    record_fd = os.open(record_path, os.O_RDWR | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o600)
    _flush()
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:
      _run_program_test(code, namespace, setup_code, test_codes[i], build, protected, record_fd, done, root, i)
    timed_out, wstatus = _wait(pid, start + _test_limit(remaining, n - i))
    elapsed = time.monotonic() - start
    _reap_all(pid)
    data = os.pread(record_fd, _RECORD_CAP + len(done) + 1, 0)
    os.close(record_fd)
    try:
      os.unlink(record_path)
    except OSError:
      pass
    output, _ = _read_capped(f".out_{i}", 1000)
    err, _ = _read_capped(f".err_{i}", 1 << 16)
    values, problem = _check_records(data, done, test["slots"])
    if values is not None:
      status, error = "ok", ""
    elif timed_out:
      status, error = "timeout", f"the test ran past its {elapsed:.2f} s share of the budget"
    elif os.WIFSIGNALED(wstatus):
      status, error = "crashed", f"killed by signal {os.WTERMSIG(wstatus)} " + err[-500:]
    elif os.WEXITSTATUS(wstatus) == 0:
      status, error = "invalid_record", problem
    else:
      status, error = ("wrong_answer" if os.WEXITSTATUS(wstatus) == 2 else "error"), err[-2000:]
    _emit({"event": "test", "i": i, "status": status, "values": values, "error": error, "output": output,
           "elapsed_s": elapsed})
  _emit({"event": "done"})


def main():
  spec_path, solution_path = sys.argv[1], sys.argv[2]
  with open(spec_path) as f:
    spec = json.load(f)
  if spec["mode"] == "program":
    os.unlink(spec_path)  # the test code stays out of the program's sight (the expected literals never came in)
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
  if spec["mode"] == "program":
    _run_programs(spec, code, namespace, root)
    return
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
