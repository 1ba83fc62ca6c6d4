"""Hostile programs against the code sandbox: each must score 0, leave the caller unharmed, write nothing outside
its temporary directory, leave no process behind, and return within its time budget plus one second.

Every hostile test runs in two modes: "auto" (namespaces where the kernel allows, as in production) and "none"
(process-level containment only, what a machine without namespaces gets). Attacks that bypass Python's audit hook
(ctypes) run only where kernel isolation is in place: without it the sandbox does not claim to stop them
(SANDBOX.md).
"""

import os
import pathlib
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import pytest

from prorl_jax.rewards import code_reward
from prorl_jax.rewards import sandbox
from prorl_jax.rewards.code_reward import CodeTests

BUDGET_S = 1.5
MODES = ("auto", "none")


def _kernel_isolated():
  iso, _ = sandbox.isolation_report()
  return "pidns" in iso and ("dedicated_uid" in iso or "userns" in iso)


def _sandbox_processes(run_uid=None):
  """Live processes of this test process's sandboxes: by token, and by the run's dedicated uid (when it had one,
  which also finds processes that wiped their environment)."""
  prefix = f"{sandbox.TOKEN_VAR}={os.getpid()}-".encode()
  found = []
  for name in os.listdir("/proc"):
    if not name.isdigit():
      continue
    try:
      with open(f"/proc/{name}/environ", "rb") as f:
        if prefix in f.read():
          found.append(int(name))
          continue
      with open(f"/proc/{name}/status") as f:
        uid = int(next(l for l in f if l.startswith("Uid:")).split()[1])
      if run_uid is not None and uid == run_uid:
        found.append(int(name))
    except (OSError, StopIteration, ValueError):
      pass
  return found


def _no_workdirs_left():
  return not [n for n in os.listdir(tempfile.gettempdir()) if n.startswith(f"prorl_sbx_{os.getpid()}_")]


def _run_hostile(code, mode, expected="UNREACHABLE", budget=BUDGET_S):
  """Runs `code` as a one-test stdin/stdout problem; checks the universal guarantees; returns the CodeResult."""
  start = time.monotonic()
  res = code_reward.run_tests(code, CodeTests(("",), (expected,)), timeout_s=budget,
                              config=sandbox.SandboxConfig(isolation=mode))
  elapsed = time.monotonic() - start
  assert elapsed < budget + 1.0, f"call took {elapsed:.2f}s, budget {budget}s"
  assert res.reward == 0.0, res
  assert _sandbox_processes(res.run_uid) == [], "a sandboxed process outlived the call"
  assert _no_workdirs_left()
  return res


@pytest.fixture(params=MODES)
def mode(request):
  return request.param


@pytest.fixture
def kernel_only():
  if not _kernel_isolated():
    pytest.skip("kernel isolation (pid namespace + dedicated uid or user namespace) unavailable here")


def test_fork_bomb(mode):
  res = _run_hostile("import os\nwhile True:\n  try:\n    os.fork()\n  except OSError:\n    pass\n", mode)
  assert res.status == "timeout" or res.test_status == ("error",)


def test_infinite_loop(mode):
  res = _run_hostile("while True:\n  pass\n", mode)
  assert res.status == "timeout"


def test_memory_bomb(mode):
  _run_hostile("x = []\nwhile True:\n  x.append(bytearray(10**8))\n", mode)


@pytest.mark.parametrize("stream", ["stdout", "stderr"])
def test_gigabytes_of_output(mode, stream):
  res = _run_hostile(f"import sys\nwhile True:\n  sys.{stream}.write('x' * (1 << 20))\n", mode)
  assert res.status in ("ok", "timeout")


def test_output_flood_is_capped_in_the_caller(mode):
  limits = sandbox.SandboxLimits(stdout_bytes=1 << 20)
  start = time.monotonic()
  res = sandbox.run_sandboxed(
      [sys.executable, "-S", "-c", "import os\nwhile True: os.write(1, b'x' * 65536)"], wall_s=BUDGET_S,
      limits=limits, config=sandbox.SandboxConfig(isolation=mode))
  assert time.monotonic() - start < BUDGET_S + 1.0
  assert res.timed_out and res.stdout_truncated and len(res.stdout) == 1 << 20


def test_write_to_home_directory(mode):
  target = pathlib.Path.home() / f"prorl_pwned_{secrets.token_hex(6)}"
  try:
    res = _run_hostile(f"open({str(target)!r}, 'w').write('pwned')\nprint('UNREACHABLE')\n", mode)
    assert not target.exists()
    assert "outside the sandbox" in res.errors[0]
  finally:
    if target.exists():
      target.unlink()


def test_write_to_home_directory_bypassing_python(kernel_only):
  target = pathlib.Path.home() / f"prorl_pwned_{secrets.token_hex(6)}"
  shared_tmp = pathlib.Path("/tmp") / f"prorl_pwned_{secrets.token_hex(6)}"
  code = ("import ctypes\nlibc = ctypes.CDLL(None)\n"
          f"for p in ({str(target)!r}, {str(shared_tmp)!r}):\n"
          "  fd = libc.open(p.encode(), 0o101, 0o644)\n  if fd >= 0:\n    libc.write(fd, b'pwned', 5)\n")
  try:
    _run_hostile(code, "auto")
    assert not target.exists() and not shared_tmp.exists()
  finally:
    for p in (target, shared_tmp):
      if p.exists():
        p.unlink()


def test_filling_the_disk_stays_in_a_bounded_private_tmpfs(kernel_only):
  code = ("import os\ntotal = 0\ntry:\n  for i in range(64):\n    with open(f'f{i}', 'wb') as f:\n"
          "      for _ in range(16):\n        total += f.write(b'x' * (1 << 20))\nexcept OSError as e:\n"
          "  print(total, e.errno)\nprint(os.statvfs('.').f_blocks * os.statvfs('.').f_frsize)\n")
  lim = sandbox.SandboxLimits()
  res = sandbox.run_sandboxed([sys.executable, "-S", "-c", code], wall_s=10.0)
  written, errno, fs_size = map(int, res.stdout.split())
  assert errno == 28 and fs_size <= max(lim.tmpfs_bytes, lim.file_size_bytes) + (1 << 20)  # ENOSPC
  assert written <= fs_size


def test_caller_home_is_hidden(kernel_only):
  secret = pathlib.Path.home() / f".prorl_test_secret_{secrets.token_hex(6)}"
  secret.write_text("key")
  try:
    code = f"import os\nprint(os.path.exists({str(secret)!r}))\n"
    res = sandbox.run_sandboxed([sys.executable, "-S", "-c", code], wall_s=5.0)
    assert res.stdout == b"False\n", res
  finally:
    secret.unlink()


def test_caller_environment_is_not_visible(mode, monkeypatch):
  secret = secrets.token_hex(12)
  monkeypatch.setenv("PRORL_TEST_SECRET", secret)
  code = ("import os\nfound = [v for v in os.environ.values() if v == %r]\n"
          "for p in os.listdir('/proc'):\n"
          "  try:\n    found += [%r] if %r.encode() in open('/proc/%%s/environ' %% p, 'rb').read() else []\n"
          "  except Exception:\n    pass\nprint(found[0] if found else 'nothing')\n") % (secret, secret, secret)
  res = _run_hostile(code, mode, expected=secret)
  assert res.test_status == ("wrong_answer",) and res.outputs == ("nothing\n",)


def test_scrubbed_environment_is_exactly_ours():
  res = sandbox.run_sandboxed([sys.executable, "-S", "-c", "import os; print(sorted(os.environ))"], wall_s=5.0)
  names = set(eval(res.stdout.decode()))  # noqa: S307 -- our own print of a list of str
  assert names == set(sandbox.scrubbed_env("/x", "t")) | {"PRORL_SANDBOX_ISOLATION"}


@pytest.fixture
def listener():
  srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
  srv.bind(("127.0.0.1", 0))
  srv.listen(8)
  srv.settimeout(0.2)
  yield srv
  srv.close()


def _nobody_connected(srv):
  try:
    srv.accept()
  except (socket.timeout, OSError):
    return True
  return False


def test_network_connection(mode, listener):
  port = listener.getsockname()[1]
  res = _run_hostile(f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1)\nprint('UNREACHABLE')",
                     mode)
  assert _nobody_connected(listener)
  assert "network access" in res.errors[0]


def test_network_connection_bypassing_python(kernel_only, listener):
  port = listener.getsockname()[1]
  code = ("import ctypes, struct\nlibc = ctypes.CDLL(None)\nfd = libc.socket(2, 1, 0)  # AF_INET, SOCK_STREAM\n"
          f"addr = struct.pack('=H', 2) + struct.pack('>H', {port}) + bytes([127, 0, 0, 1]) + bytes(8)\n"
          "ok = fd >= 0 and libc.connect(fd, addr, 16) == 0\nprint('UNREACHABLE' if ok else 'refused')\n")
  res = _run_hostile(code, "auto")
  assert res.outputs == ("refused\n",)
  assert _nobody_connected(listener)


def test_signalling_the_parent(mode):
  _run_hostile("import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\nprint('UNREACHABLE')\n", mode)


def test_signalling_parent_and_caller_bypassing_python(kernel_only):
  res = _run_hostile(f"import ctypes, os\nlibc = ctypes.CDLL(None)\nlibc.kill({os.getpid()}, 9)\n"
                     "libc.kill(os.getppid(), 9)\nprint('UNREACHABLE')\n", "auto")
  assert res.status == "harness_failed"  # it killed its own harness; we (the caller) are still here


def test_background_process_outliving_the_call(mode):
  # Double fork + setsid, then exec with an empty environment (invisible to a token scan), then wait it out.
  code = ("import os, time\nif os.fork() == 0:\n  os.setsid()\n  if os.fork() == 0:\n"
          "    os.execve('/bin/sleep', ['sleep', '30'], {})\n  os._exit(0)\ntime.sleep(0.2)\nprint('done')\n")
  res = _run_hostile(code, mode)
  time.sleep(0.3)
  assert _sandbox_processes(res.run_uid) == []


def test_call_returns_within_budget_when_all_tests_hang():
  start = time.monotonic()
  res = code_reward.run_tests("import time\ntime.sleep(100)\n", CodeTests(("",) * 5, ("x",) * 5),
                              timeout_s=BUDGET_S)
  assert res.status == "timeout" and res.reward == 0.0
  assert time.monotonic() - start < BUDGET_S + 1.0


def test_resource_limits_are_applied():
  code = ("import resource as r\nprint(*(r.getrlimit(getattr(r, n))[0] for n in "
          "('RLIMIT_CPU', 'RLIMIT_AS', 'RLIMIT_FSIZE', 'RLIMIT_NOFILE', 'RLIMIT_NPROC', 'RLIMIT_CORE')))\n")
  lim = sandbox.SandboxLimits()
  res = sandbox.run_sandboxed([sys.executable, "-S", "-c", code], wall_s=3.0)
  assert res.ok, res.stderr
  cpu, mem, fsize, nofile, nproc, core = map(int, res.stdout.split())
  assert (cpu, mem, fsize, nofile, nproc, core) == (4, lim.memory_bytes, lim.file_size_bytes, lim.open_files,
                                                    lim.processes, 0)


def test_file_size_limit_kills_big_writes():
  res = sandbox.run_sandboxed(
      [sys.executable, "-S", "-c", "f = open('big', 'wb')\nwhile True: f.write(b'x' * (1 << 20))"], wall_s=5.0,
      limits=sandbox.SandboxLimits(file_size_bytes=4 << 20))
  assert res.exit_code == 1 and b"File too large" in res.stderr  # Python ignores SIGXFSZ, so write() fails


def test_temporary_directory_is_removed_even_if_locked(mode):
  res = sandbox.run_sandboxed([sys.executable, "-S", "-c", "import os; print(os.getcwd()); os.mkdir('d'); "
                               "os.chmod('d', 0); os.chmod('.', 0o500)"], wall_s=5.0,
                              config=sandbox.SandboxConfig(isolation=mode))
  workdir = res.stdout.decode().strip()
  assert workdir.startswith(os.path.realpath(tempfile.gettempdir()))
  assert not os.path.exists(workdir)


def test_files_stdin_and_cwd():
  res = sandbox.run_sandboxed(
      [sys.executable, "-S", "-c", "import sys; print(open('a.txt').read(), sys.stdin.read())"], wall_s=5.0,
      files={"a.txt": "from-file"}, stdin=b"from-stdin")
  assert res.ok and res.stdout == b"from-file from-stdin\n"


@pytest.mark.parametrize("kwargs, field", [
    ({"argv": []}, "argv"), ({"argv": ["python"]}, "argv\\[0\\]"), ({"wall_s": 0}, "wall_s"),
    ({"wall_s": float("nan")}, "wall_s"), ({"files": {"../x": "y"}}, "files"),
    ({"limits": sandbox.SandboxLimits(memory_bytes=0)}, "memory_bytes"),
    ({"config": sandbox.SandboxConfig(isolation="strict")}, "isolation"),
])
def test_bad_arguments_name_the_field(kwargs, field):
  args = {"argv": [sys.executable, "-c", "pass"], "wall_s": 1.0, **kwargs}
  with pytest.raises(ValueError, match=field):
    sandbox.run_sandboxed(args.pop("argv"), **args)


def test_isolation_report_is_consistent():
  iso, warnings = sandbox.isolation_report()
  if "pidns" in iso:
    assert {"mountns", "netns", "private_tmp", "private_workdir"} <= set(iso)
    assert "readonly_root" in iso or any("read-only" in w for w in warnings)  # kernels < 5.12 lack mount_setattr
  else:
    assert warnings, "falling back must say why"
  none_iso, none_warnings = sandbox.isolation_report(sandbox.SandboxConfig(isolation="none"))
  assert "pidns" not in none_iso


_NOBODY_SCRIPT = r"""
import json, os, sys, time
sys.path.insert(0, sys.argv[1])
from prorl_jax.rewards import code_reward, sandbox
from prorl_jax.rewards.code_reward import CodeTests
out = {"uid": os.getuid(), "iso": list(sandbox.isolation_report()[0])}
progs = {
  "correct": ("print(int(input()) * 2)", CodeTests(("21\n",), ("42",))),
  "fork_bomb": ("import os\nwhile True:\n  try: os.fork()\n  except OSError: pass\n", CodeTests(("",), ("x",))),
  "write_home": ("import ctypes\nctypes.CDLL(None).open(%r.encode(), 0o101, 0o644)\n" % sys.argv[2],
                 CodeTests(("",), ("x",))),
  "daemon": ("import os\nif os.fork() == 0:\n  os.setsid()\n  os.execve('/bin/sleep', ['sleep', '30'], {})\n",
             CodeTests(("",), ("x",))),
}
for name, (code, tests) in progs.items():
  t = time.monotonic()
  r = code_reward.run_tests(code, tests, timeout_s=2.0)
  out[name] = [r.reward, time.monotonic() - t]
print(json.dumps(out))
"""


def test_unprivileged_user_namespace_path(tmp_path):
  """The path a non-root user takes (user namespace), exercised as `nobody` with the system interpreter."""
  system_python = shutil.which("python3", path="/usr/bin:/bin")
  if os.geteuid() != 0 or not shutil.which("setpriv") or not system_python:
    pytest.skip("needs root (to become nobody), setpriv and a system python3")
  check = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "unshare", "--user",
                          "--net", "true"], capture_output=True)
  if check.returncode != 0:
    pytest.skip("unprivileged user namespaces are disabled on this kernel")
  repo = str(pathlib.Path(__file__).resolve().parents[1])
  marker = tmp_path / "nobody_home_marker"
  tmp_path.chmod(0o777)
  nobody_before = set(subprocess.run(["pgrep", "-u", "65534"], capture_output=True, text=True).stdout.split())
  proc = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", system_python, "-c",
                         _NOBODY_SCRIPT, repo, str(marker)], capture_output=True, text=True, timeout=120,
                        env={"PATH": "/usr/bin:/bin", "HOME": "/nonexistent"})
  assert proc.returncode == 0, proc.stderr
  out = __import__("json").loads(proc.stdout.strip().splitlines()[-1])
  assert out["uid"] == 65534 and "userns" in out["iso"] and "pidns" in out["iso"], out
  assert out["correct"][0] == 1.0
  for name in ("fork_bomb", "write_home", "daemon"):
    assert out[name][0] == 0.0 and out[name][1] < 3.0, (name, out)
  assert not marker.exists()
  leftover = set(subprocess.run(["pgrep", "-u", "65534"], capture_output=True, text=True).stdout.split())
  assert leftover <= nobody_before, f"processes of nobody left: {leftover - nobody_before}"


def test_a_program_that_cannot_start_is_a_sandbox_error():
  with pytest.raises(sandbox.SandboxError, match="cannot start /nonexistent/program"):
    sandbox.run_sandboxed(["/nonexistent/program"], wall_s=5.0)


def test_exit_code_122_from_a_program_is_just_an_exit_code():
  res = sandbox.run_sandboxed([sys.executable, "-S", "-c", "raise SystemExit(122)"], wall_s=5.0)
  assert res.exit_code == 122 and not res.ok
