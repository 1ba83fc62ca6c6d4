"""Sandbox launcher: the first process of every sandboxed run (stdlib only).

`sandbox.run_sandboxed` executes this file as `python -s -S -B -P _sandbox_child.py CONFIG_JSON` with
`process_group=0`, so no `preexec_fn` ever runs in the (possibly multi-threaded, JAX-importing) caller. The
environment is the caller's scrubbed one, so PYTHONHASHSEED=0 applies and no other PYTHON* variable exists.
Three processes follow:

  launcher  -- unshare(user?, mount, pid, net, ipc, uts) --> waits for init, exits with its status.
  init      -- pid 1 of the new pid namespace: private mount view, limits, deadline, reaping; its exit makes the
               kernel kill every process left in the namespace (double-fork/setsid daemons included).
  program   -- rlimits, dedicated uid when root, no_new_privs, then execve(argv), or, with python_main, runs the
               Python file argv[0] in this interpreter (one interpreter start-up instead of two).

Without namespaces (kernel or container refuses them) init is a child subreaper that kills every descendant once
the program ends. `status_fd` carries newline-delimited JSON: the launcher's {"init_pid"}, then init's report.
"""

import ctypes
import json
import os
import resource
import signal
import stat
import sys
import time

_LINUX = sys.platform.startswith("linux")
_CLONE_NEWNS, _CLONE_NEWUTS, _CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
_CLONE_NEWUSER, _CLONE_NEWPID, _CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC = 1, 2, 4, 8
_MS_REMOUNT, _MS_BIND, _MS_REC, _MS_PRIVATE = 32, 4096, 16384, 1 << 18
_PR_SET_PDEATHSIG, _PR_SET_DUMPABLE, _PR_SET_CHILD_SUBREAPER, _PR_SET_NO_NEW_PRIVS = 1, 4, 36, 38
_SYS_MOUNT_SETATTR = 442  # same number on every architecture (new-style syscall table)
_AT_FDCWD, _AT_RECURSIVE, _MOUNT_ATTR_RDONLY = -100, 0x8000, 0x1
EXIT_SETUP_FAILED = 121  # init could not build the sandbox; the caller raises SandboxError
EXIT_EXEC_FAILED = 122  # the program could not be started (bad argv, ...); also a SandboxError

_libc = ctypes.CDLL(None, use_errno=True) if _LINUX else None


class _MountAttr(ctypes.Structure):
  _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
              ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


class _Deadline(Exception):
  pass


def _check(ret, what):
  if ret != 0:
    err = ctypes.get_errno()
    raise OSError(err, f"{what}: {os.strerror(err)}")


def _prctl(option, value):
  if _libc is not None:
    _check(_libc.prctl(option, ctypes.c_ulong(value), 0, 0, 0), f"prctl({option})")


def _mount(source, target, fstype, flags, data=None):
  enc = lambda s: None if s is None else os.fsencode(s)
  _check(_libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)),
         f"mount {source} -> {target}")


def _write(path, text):
  with open(path, "w") as f:
    f.write(text)


def _enter_namespaces(cfg, info):
  """unshare() into fresh namespaces; returns True when mount+pid+net namespaces are in place."""
  if cfg["isolation"] == "none" or not _LINUX:
    return False
  flags = _CLONE_NEWNS | _CLONE_NEWPID | _CLONE_NEWNET | _CLONE_NEWIPC | _CLONE_NEWUTS
  uid, gid = os.geteuid(), os.getegid()
  try:
    if uid == 0:
      _check(_libc.unshare(flags), "unshare")
    else:  # unprivileged: the user namespace grants the capabilities the others need
      _check(_libc.unshare(flags | _CLONE_NEWUSER), "unshare(user)")
      _write("/proc/self/setgroups", "deny")
      _write("/proc/self/uid_map", f"{uid} {uid} 1")
      _write("/proc/self/gid_map", f"{gid} {gid} 1")
      info["isolation"].append("userns")
  except OSError as e:
    info["warnings"].append(f"namespaces unavailable ({e}); using process-level containment only")
    return False
  info["isolation"] += ["mountns", "pidns", "netns", "ipcns", "utsns"]
  return True


def _blocking_ancestor(path, uid):
  """Highest ancestor directory of `path` that `uid` (no supplementary groups) may not traverse, or None."""
  parts = path.strip("/").split("/")
  for i in range(1, len(parts)):
    d = "/" + "/".join(parts[:i])
    st = os.stat(d)
    if not (st.st_mode & stat.S_IXOTH or (st.st_uid == uid and st.st_mode & stat.S_IXUSR)):
      return d
  return None


def _under(path, root):
  return path == root or path.startswith(root.rstrip("/") + "/")


def _snapshot(directory):
  """The (small) files the caller put in the sandbox dir, read before the dir is replaced by a tmpfs."""
  files = {}
  for name in os.listdir(directory):
    path = os.path.join(directory, name)
    if os.path.isfile(path) and not os.path.islink(path):
      with open(path, "rb") as f:
        files[name] = f.read()
  return files


def _setup_mounts(cfg, run_uid, info):
  """Read-only host, private tmpfs for scratch dirs and for the working directory, caller's home hidden, own /proc.

  The working directory becomes a size-limited tmpfs holding a copy of the caller's files, so nothing the program
  writes reaches the host's disk. Interpreter directories hidden by an overlay are bind-mounted back read-only.
  """
  _mount(None, "/", None, _MS_REC | _MS_PRIVATE)  # nothing we mount propagates back to the host
  workdir = os.path.realpath(cfg["cwd"])
  files = _snapshot(workdir)
  exposed = sorted({os.path.realpath(p) for p in cfg["expose"] if os.path.isdir(p)} - {workdir}, key=len)
  fds = {p: os.open(p, os.O_PATH | os.O_DIRECTORY) for p in exposed}  # handles survive the overmounts below
  attr = _MountAttr(_MOUNT_ATTR_RDONLY, 0, 0, 0)
  _libc.syscall.restype = ctypes.c_long
  ret = _libc.syscall(ctypes.c_long(_SYS_MOUNT_SETATTR), ctypes.c_int(_AT_FDCWD), b"/",
                      ctypes.c_uint(_AT_RECURSIVE), ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr)))
  if ret == 0:
    info["isolation"].append("readonly_root")
  else:
    info["warnings"].append(f"recursive read-only remount failed ({os.strerror(ctypes.get_errno())})")
  overlays = {}  # mount point -> tmpfs options
  for d in ("/tmp", "/var/tmp", "/dev/shm"):
    if os.path.isdir(d) and not os.path.islink(d):
      overlays[os.path.realpath(d)] = f"size={cfg['tmpfs_bytes']},mode=1777"
  for d in cfg["hide"]:  # the caller's home: keys, tokens and caches are none of the program's business
    if os.path.isdir(d) and os.path.realpath(d) not in ("/", workdir):
      overlays[os.path.realpath(d)] = "size=1m,mode=755"
  if run_uid is not None:  # the dedicated uid must reach the interpreter; hide what lies around it
    for p in exposed:
      blocker = _blocking_ancestor(p, run_uid)
      if blocker is not None:
        overlays[blocker] = "size=1m,mode=755"
  roots = sorted(overlays, key=len)
  roots = [r for r in roots if not any(r != o and _under(r, o) for o in roots)]
  os.umask(0o022)
  for r in roots:
    _mount("tmpfs", r, "tmpfs", _MS_NOSUID | _MS_NODEV, overlays[r])
  info["isolation"].append("private_tmp")
  for p in exposed:
    if any(_under(p, r) for r in roots):
      os.makedirs(p, mode=0o755, exist_ok=True)
      _mount(f"/proc/self/fd/{fds[p]}", p, None, _MS_BIND)  # read-only: the bind keeps the source's flag
    os.close(fds[p])
  os.makedirs(workdir, mode=0o700, exist_ok=True)
  owner = run_uid if run_uid is not None else os.getuid()
  group = run_uid if run_uid is not None else os.getgid()
  size = max(cfg["tmpfs_bytes"], cfg["limits"]["file_size_bytes"]) + sum(map(len, files.values()))
  _mount("tmpfs", workdir, "tmpfs", _MS_NOSUID | _MS_NODEV, f"size={size},mode=700,uid={owner},gid={group}")
  for name, data in files.items():
    with open(os.path.join(workdir, name), "wb") as f:
      f.write(data)
  info["isolation"].append("private_workdir")
  try:
    _mount("proc", "/proc", "proc", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC)
    info["isolation"].append("private_proc")
  except OSError as e:
    info["warnings"].append(f"private /proc not mounted ({e})")


def _set_limits(lim):
  """The rlimits of SandboxLimits, never above a hard limit we already have. On Linux every one must succeed."""
  def setl(res, soft, hard=None):
    hard = soft if hard is None else hard
    _, cur_hard = resource.getrlimit(res)
    if cur_hard != resource.RLIM_INFINITY:
      soft, hard = min(soft, cur_hard), min(hard, cur_hard)
    try:
      resource.setrlimit(res, (soft, hard))
    except (ValueError, OSError):
      if _LINUX:
        raise  # elsewhere (macOS refuses RLIMIT_AS, for one) the wall clock and the other limits remain
  setl(resource.RLIMIT_CPU, lim["cpu_s"], lim["cpu_s"] + 1)  # SIGXCPU first, SIGKILL one second later
  setl(resource.RLIMIT_FSIZE, lim["file_size_bytes"])
  setl(resource.RLIMIT_NOFILE, lim["open_files"])
  setl(resource.RLIMIT_CORE, 0)
  if lim["stack_bytes"]:
    setl(resource.RLIMIT_STACK, lim["stack_bytes"])
  if lim["memory_bytes"]:
    setl(resource.RLIMIT_AS, lim["memory_bytes"])
  if lim["processes"] and hasattr(resource, "RLIMIT_NPROC"):
    setl(resource.RLIMIT_NPROC, lim["processes"])


def _program(cfg, run_uid, status_fd, error_fd, isolation):
  """In the forked child: limits, identity, then exec (or run a Python script in this interpreter). No return.

  A failure before the program starts is written to `error_fd` (close-on-exec, so a successful exec says nothing).
  """
  try:
    env = dict(cfg["env"], PRORL_SANDBOX_ISOLATION=",".join(isolation))
    os.close(status_fd)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    _set_limits(cfg["limits"])
    try:  # if the host runs out of memory anyway, the kernel kills sandboxed programs before anything else
      _write("/proc/self/oom_score_adj", "1000")
    except OSError:
      pass
    if run_uid is not None:
      os.setgroups([])
      os.setresgid(run_uid, run_uid, run_uid)
      os.setresuid(run_uid, run_uid, run_uid)
    if _LINUX:
      _prctl(_PR_SET_NO_NEW_PRIVS, 1)
    os.chdir(cfg["cwd"])
    if not cfg["python_main"]:
      signal.signal(signal.SIGPIPE, signal.SIG_DFL)
      os.execve(cfg["argv"][0], cfg["argv"], env)
  except BaseException as e:  # noqa: BLE001 -- report anything, the process must not continue
    os.write(error_fd, f"cannot start {cfg['argv'][0]}: {e!r}".encode())
    os._exit(EXIT_EXEC_FAILED)
  os.close(error_fd)
  _run_script(cfg["argv"], env)


def _run_script(argv, env):
  """Runs argv[0] (a Python file) as __main__ in this interpreter: saves a second interpreter start-up."""
  import runpy  # noqa: PLC0415
  os.environ.clear()
  os.environ.update(env)
  sys.argv = list(argv)
  code = 0
  try:
    runpy.run_path(argv[0], run_name="__main__")
  except SystemExit as e:
    code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
  except BaseException:  # noqa: BLE001
    import traceback  # noqa: PLC0415
    traceback.print_exc()
    code = 1
  for stream in (sys.stdout, sys.stderr):
    try:
      stream.flush()
    except Exception:  # noqa: BLE001
      pass
  os._exit(code)


def _children_of(pid):
  """Direct children of `pid` from /proc (the launcher is a subreaper, so orphans land here)."""
  kids = []
  for name in os.listdir("/proc"):
    if name.isdigit():
      try:
        with open(f"/proc/{name}/stat", "rb") as f:
          fields = f.read().rsplit(b")", 1)[1].split()
        if int(fields[1]) == pid:
          kids.append(int(name))
      except (OSError, IndexError, ValueError):
        pass
  return kids


def _kill_descendants():
  """Fallback mode: SIGKILL and reap every descendant until none is left (subreaper makes orphans ours)."""
  me, give_up = os.getpid(), time.monotonic() + 2.0
  while time.monotonic() < give_up:
    for kid in _children_of(me) if os.path.isdir("/proc") else []:
      try:
        os.kill(kid, signal.SIGKILL)
      except ProcessLookupError:
        pass
    try:
      while os.waitpid(-1, os.WNOHANG)[0] > 0:
        pass
    except ChildProcessError:
      return
    time.sleep(0.001)


def _init(cfg, status_fd, in_namespaces, info, launcher_pid):
  """Pid 1 of the sandbox (or a subreaper without namespaces). Never returns."""
  signal.signal(signal.SIGINT, signal.SIG_DFL)  # pid 1 receives in-namespace signals only if it handles them
  status = {"exit_code": None, "signal": None, "timed_out": False, "cpu_s": 0.0, "max_rss_kb": 0}
  try:
    if _LINUX:
      _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
      _prctl(_PR_SET_DUMPABLE, 0)  # the program (same uid without root) cannot ptrace us or open our fds
      if not in_namespaces:
        _prctl(_PR_SET_CHILD_SUBREAPER, 1)
    run_uid = None
    if os.geteuid() == 0 and cfg["drop_root"]:
      run_uid = cfg["uid_base"] + launcher_pid  # unique among live sandboxes: RLIMIT_NPROC counts per uid
      os.chown(cfg["cwd"], run_uid, run_uid)
      info["run_uid"] = run_uid
      info["isolation"].append("dedicated_uid")
    if in_namespaces:
      _setup_mounts(cfg, run_uid, info)
    elif run_uid is not None and any(_blocking_ancestor(os.path.realpath(p), run_uid) for p in cfg["expose"]):
      info["warnings"].append("the interpreter is unreachable for a dedicated uid and there is no mount namespace "
                              "to expose it: the program runs as root")
      os.chown(cfg["cwd"], 0, 0)
      run_uid = None
      del info["run_uid"]
      info["isolation"].remove("dedicated_uid")
  except Exception as e:  # noqa: BLE001
    info["error"] = f"sandbox setup failed: {e!r}"
    os.write(status_fd, (json.dumps({**status, **info}) + "\n").encode())
    os._exit(EXIT_SETUP_FAILED)
  error_r, error_w = os.pipe()  # close-on-exec
  pid = os.fork()
  if pid == 0:
    os.close(error_r)
    _program(cfg, run_uid, status_fd, error_w, info["isolation"])
  os.close(error_w)

  def on_alarm(signum, frame):
    raise _Deadline()

  signal.signal(signal.SIGALRM, on_alarm)
  remaining = cfg["deadline"] - time.monotonic()
  try:
    if remaining <= 0:
      raise _Deadline()
    signal.setitimer(signal.ITIMER_REAL, remaining)
    start_error = os.read(error_r, 4096)  # returns at exec (EOF) or with the reason the program did not start
    if start_error:
      info["error"] = start_error.decode(errors="replace")
    while True:  # reap orphans too, so exited ones stop counting against RLIMIT_NPROC
      done, wstatus, usage = os.wait4(-1, 0)
      if done == pid:
        signal.setitimer(signal.ITIMER_REAL, 0)
        status["cpu_s"] = usage.ru_utime + usage.ru_stime
        status["max_rss_kb"] = usage.ru_maxrss
        if os.WIFSIGNALED(wstatus):
          status["signal"] = os.WTERMSIG(wstatus)
        else:
          status["exit_code"] = os.WEXITSTATUS(wstatus)
        break
  except _Deadline:
    status["timed_out"] = True
    try:
      os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
      pass
  except ChildProcessError:
    pass
  if not in_namespaces:
    _kill_descendants()  # with a pid namespace the kernel does this when we exit
  try:
    os.write(status_fd, (json.dumps({**status, **info}) + "\n").encode())
  except OSError:
    pass
  os._exit(EXIT_EXEC_FAILED if "error" in info else 0)


def main():
  cfg = json.loads(sys.argv[1])
  status_fd = cfg["status_fd"]
  if _LINUX:
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)  # caller gone -> we go, and init follows us
    if os.getppid() != cfg["parent_pid"]:
      os._exit(EXIT_SETUP_FAILED)
  info = {"isolation": [], "warnings": []}
  launcher_pid = os.getpid()
  in_namespaces = _enter_namespaces(cfg, info)
  if not in_namespaces and cfg["isolation"] == "namespaces":
    info["error"] = "isolation='namespaces' was required but the kernel refused: " + "; ".join(info["warnings"])
    os.write(status_fd, (json.dumps(info) + "\n").encode())
    os._exit(EXIT_SETUP_FAILED)
  pid = os.fork()
  if pid == 0:
    _init(cfg, status_fd, in_namespaces, info, launcher_pid)
  # The caller's backstop kills init, not us: we then return only once the kernel has emptied the namespace.
  os.write(status_fd, (json.dumps({"init_pid": pid}) + "\n").encode())
  os.close(status_fd)
  _, wstatus = os.waitpid(pid, 0)
  os._exit(os.WEXITSTATUS(wstatus) if os.WIFEXITED(wstatus) else 128 + os.WTERMSIG(wstatus))


if __name__ == "__main__":
  main()
