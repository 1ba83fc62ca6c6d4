"""Reward worker process: scores items sent by `manager.RewardManager` over a socket, in its main thread.

Started as `python -P -m prorl_jax.rewards._reward_worker FD PRELOAD_JSON PARENT_PID`. Requests are pickles from
the manager (trusted); replies are JSON, so a verifier subverted by a hostile response cannot hand the trainer a pickle.
Frames: 4-byte big-endian length + payload. Request: (item_id, "module:function", args, kwargs). Replies:
{"ready": pid, "preload_errors": {...}} once, then {"id", "status": "ok"|"error", "value", "error_type", "error"}.
"""

import importlib
import json
import math
import os
import pickle
import socket
import struct
import sys
import threading
import time
import traceback

_HEADER = struct.Struct("!I")
_functions = {}


def resolve(path):
  """'pkg.module:function' -> the function (cached per process)."""
  fn = _functions.get(path)
  if fn is None:
    module, _, name = path.partition(":")
    fn = _functions[path] = getattr(importlib.import_module(module), name)
  return fn


def _recv_exact(sock, n):
  buf = bytearray()
  while len(buf) < n:
    chunk = sock.recv(n - len(buf))
    if not chunk:
      return None
    buf += chunk
  return bytes(buf)


def _send(sock, obj):
  data = json.dumps(obj).encode()
  sock.sendall(_HEADER.pack(len(data)) + data)


class BadValue(Exception):
  """The verifier returned something that is not a finite number (a verifier bug, not a dataset bug)."""


def _score(path, args, kwargs):
  raw = resolve(path)(*args, **kwargs)
  try:
    value = float(raw)
  except (TypeError, ValueError):
    raise BadValue(f"{path} returned {raw!r}, not a number") from None
  if not math.isfinite(value):
    raise BadValue(f"{path} returned a non-finite reward {value}")
  return value


def _die_with_parent(parent_pid):
  """A worker stuck in a verifier never sees the socket close, so a watchdog thread ends it when the manager dies.

  (PR_SET_PDEATHSIG would fire when the *thread* that spawned us exits, which is not what we want.)
  """
  def watch():
    while os.getppid() == parent_pid:
      time.sleep(0.5)
    os._exit(1)
  threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()


def main():
  sock = socket.socket(fileno=int(sys.argv[1]))
  _die_with_parent(int(sys.argv[3]))
  errors = {}
  for path in json.loads(sys.argv[2]):
    try:
      resolve(path)
    except Exception as e:  # noqa: BLE001 -- reported to the manager, which decides what to say
      errors[path] = f"{type(e).__name__}: {e}"
  _send(sock, {"ready": os.getpid(), "preload_errors": errors})
  while True:
    header = _recv_exact(sock, _HEADER.size)
    if header is None:
      return  # manager closed the socket: shut down
    item_id, path, args, kwargs = pickle.loads(_recv_exact(sock, _HEADER.unpack(header)[0]))
    try:
      reply = {"id": item_id, "status": "ok", "value": _score(path, args, kwargs), "error_type": "", "error": ""}
    except Exception as e:  # noqa: BLE001 -- any verifier failure becomes an "error" item, the worker lives on
      tb = "".join(traceback.format_exception(type(e), e, e.__traceback__, limit=-3))
      reply = {"id": item_id, "status": "error", "value": 0.0, "error_type": type(e).__name__,
               "error": f"{type(e).__name__}: {e}"[:2000], "traceback": tb[-4000:]}
    _send(sock, reply)


if __name__ == "__main__":
  main()
