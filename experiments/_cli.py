"""What the command-line entry points share: one-line errors and the exit codes they end with.

Exit codes: 0 finished; 2 bad input (a flag, a config field or value, data, a path, a checkpoint that cannot be
used); 74 a checkpoint could not be written (the disk is full; the steps saved before are intact); 75 stopped by
SIGTERM / SIGINT after checkpointing the last completed step (rerun to resume). Anything else is a bug: its
traceback is printed as Python does.
"""

from __future__ import annotations

import contextlib
import difflib
import os
import sys
from typing import Iterator, NoReturn, Sequence

from absl import flags

from prorl_jax.config_files import field_names, load_config_file

EXIT_BAD_INPUT = 2
EXIT_CHECKPOINT_WRITE = 74  # sysexits.h EX_IOERR
EXIT_PREEMPTED = 75  # sysexits.h EX_TEMPFAIL; the same number as prorl_jax.training.preemption.EXIT_PREEMPTED


def usage_error(message: str) -> NoReturn:
  print(f"error: {message}", file=sys.stderr)
  sys.exit(EXIT_BAD_INPUT)


def parse_flags(argv: Sequence[str]) -> list[str]:
  """absl's flag parsing, for `app.run(main, flags_parser=parse_flags)`: a bad flag or a misspelt config field
  is one line naming it (and the closest valid name) with exit 2, not a traceback from inside ml_collections."""
  try:
    rest = flags.FLAGS(list(argv))
    config = flags.FLAGS["config"].value if "config" in flags.FLAGS else None
    if config is not None:
      config.keys()  # a config file that failed to load raises on first use (ml_collections defers the error)
    return rest
  except Exception as e:  # noqa: BLE001 - flags.Error, or AttributeError/KeyError from a config override
    usage_error(_explain(argv, e))


def _explain(argv: Sequence[str], error: Exception) -> str:
  config_file = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
  if config_file is not None and not os.path.isfile(os.path.expanduser(config_file.split(":", 1)[0])):
    return f"--config: no such file {config_file!r}"
  fields = _config_fields(config_file)
  for arg in argv:
    if arg.startswith("--config.") and fields:
      name = arg[len("--config."):].split("=", 1)[0]
      if name not in fields:
        close = difflib.get_close_matches(name, fields, n=1, cutoff=0.6)
        hint = f"; did you mean --config.{close[0]}?" if close else "; see the config file for the valid fields"
        return f"--config.{name}: the config has no field {name!r}{hint}"
  lines = [line.strip() for line in str(error).splitlines() if line.strip()]
  if not isinstance(error, flags.Error):  # the config file exists but its get_config() raised
    return f"--config={config_file}: {type(error).__name__}: {lines[-1] if lines else ''}"
  return lines[0] if lines else type(error).__name__


def _config_fields(config_file: str | None) -> list[str]:
  """Every dotted field name of the config file's `get_config()` (empty if it cannot be loaded)."""
  if config_file is None:
    return []
  try:
    return field_names(load_config_file(config_file.split(":", 1)[0]))
  except Exception:  # noqa: BLE001 - the original parse error is reported instead
    return []


@contextlib.contextmanager
def exit_codes(*bad_input: type[BaseException]) -> Iterator[None]:
  """Ends the process with the documented exit code and one line when the run stops for a known reason:
  preemption (75), a checkpoint that cannot be written (74), or one of `bad_input` (2)."""
  from prorl_jax.training import CheckpointWriteError, Preempted
  try:
    yield
  except Preempted as e:
    print(f"stopped: {e}", file=sys.stderr)
    sys.exit(EXIT_PREEMPTED)
  except CheckpointWriteError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(EXIT_CHECKPOINT_WRITE)
  except bad_input as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(EXIT_BAD_INPUT)
