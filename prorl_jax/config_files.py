"""Python config files (ml_collections style): load one's `get_config()`, list a config's dotted field names.

Shared by the command-line entry points (to name the field a mistyped override meant) and studies (to build every
run's config from a base file and overrides).
"""

from __future__ import annotations

import importlib.util
import os
import pathlib
from typing import Any

import ml_collections

from prorl_jax.errors import ConfigError


def load_config_file(path: str | os.PathLike) -> ml_collections.ConfigDict:
  """`get_config()` of a Python config file, as an unlocked copy; a ConfigError naming the file when it is missing
  or its `get_config()` raises."""
  path = pathlib.Path(os.path.expanduser(str(path)))
  if not path.is_file():
    raise ConfigError(f"config file {str(path)!r} does not exist")
  spec = importlib.util.spec_from_file_location(f"_config_file_{abs(hash(str(path)))}", path)
  module = importlib.util.module_from_spec(spec)
  try:
    spec.loader.exec_module(module)
    config = module.get_config()
  except Exception as e:  # noqa: BLE001 - reported with the file's name
    raise ConfigError(f"config file {str(path)!r}: get_config() failed: {type(e).__name__}: {e}") from e
  return ml_collections.ConfigDict(config.to_dict()) if isinstance(config, ml_collections.ConfigDict) else config


def field_names(config: Any, prefix: str = "") -> list[str]:
  """Every dotted field name of a (nested) config, parents before their children."""
  names = []
  for key, value in config.items():
    names.append(prefix + key)
    if hasattr(value, "items"):
      names.extend(field_names(value, prefix + key + "."))
  return names
