"""Lossless JSON for dataset fields: values plain JSON would change (tuples, sets, Fractions, ...) are tagged.

Reasoning Gym entries carry such values in their `metadata` (e.g. `gsm_symbolic` stores `Fraction`s, grid tasks
store tuples) and their scorers may depend on them, so a logic ground truth written to jsonl/parquet must come back
equal, not merely similar. Plain JSON (no tags) decodes to itself, so files written by other tools load unchanged.
"""

from __future__ import annotations

import base64
import decimal
import fractions
import json
from typing import Any

import numpy as np

TAG = "__prorl_type__"


def to_jsonable(value: Any, path: str = "$") -> Any:
  """Returns a JSON-compatible tree equal to `value` after `from_jsonable`.

  Args:
    value: nested lists/tuples/dicts/sets of str, int, float, bool, None, Fraction, Decimal, complex, bytes, numpy
      scalars (stored as the equal Python scalar) and numpy arrays.
    path: where `value` sits, used only in the error message.

  Raises:
    TypeError: naming the path of a value that has no JSON form.
  """
  if value is None or isinstance(value, (bool, str)):
    return value
  if isinstance(value, (int, float)) and not isinstance(value, np.generic):
    return value
  if isinstance(value, np.generic):
    return to_jsonable(value.item(), path)
  if isinstance(value, list):
    return [to_jsonable(v, f"{path}[{i}]") for i, v in enumerate(value)]
  if isinstance(value, tuple):
    return {TAG: "tuple", "items": [to_jsonable(v, f"{path}[{i}]") for i, v in enumerate(value)]}
  if isinstance(value, (set, frozenset)):
    items = [to_jsonable(v, f"{path}{{}}") for v in value]
    # Sets have no order; sort by the encoded text so the same set always writes the same bytes.
    items.sort(key=lambda v: json.dumps(v, sort_keys=True))
    return {TAG: "frozenset" if isinstance(value, frozenset) else "set", "items": items}
  if isinstance(value, dict):
    if all(isinstance(k, str) for k in value) and TAG not in value:
      return {k: to_jsonable(v, f"{path}.{k}") for k, v in value.items()}
    return {TAG: "dict", "items": [[to_jsonable(k, f"{path}<key>"), to_jsonable(v, f"{path}[{k!r}]")]
                                   for k, v in value.items()]}
  if isinstance(value, fractions.Fraction):
    return {TAG: "fraction", "value": str(value)}
  if isinstance(value, decimal.Decimal):
    return {TAG: "decimal", "value": str(value)}
  if isinstance(value, complex):
    return {TAG: "complex", "real": value.real, "imag": value.imag}
  if isinstance(value, bytes):
    return {TAG: "bytes", "base64": base64.b64encode(value).decode("ascii")}
  if isinstance(value, np.ndarray):
    if value.dtype == object:
      raise TypeError(f"value at {path} is a numpy object array, which has no JSON form; convert it to a list")
    return {TAG: "ndarray", "dtype": value.dtype.str, "shape": list(value.shape),
            "data": to_jsonable(value.ravel().tolist(), path)}
  raise TypeError(f"value at {path} has type {type(value).__name__}, which has no JSON form; convert it to a "
                  "str/number/list/dict first")


def from_jsonable(value: Any) -> Any:
  """Inverse of `to_jsonable`: rebuilds tagged values; untagged JSON is returned as is."""
  if isinstance(value, list):
    return [from_jsonable(v) for v in value]
  if not isinstance(value, dict):
    return value
  tag = value.get(TAG)
  if tag is None:
    return {k: from_jsonable(v) for k, v in value.items()}
  if tag == "tuple":
    return tuple(from_jsonable(v) for v in value["items"])
  if tag == "set":
    return {from_jsonable(v) for v in value["items"]}
  if tag == "frozenset":
    return frozenset(from_jsonable(v) for v in value["items"])
  if tag == "dict":
    return {from_jsonable(k): from_jsonable(v) for k, v in value["items"]}
  if tag == "fraction":
    return fractions.Fraction(value["value"])
  if tag == "decimal":
    return decimal.Decimal(value["value"])
  if tag == "complex":
    return complex(value["real"], value["imag"])
  if tag == "bytes":
    return base64.b64decode(value["base64"])
  if tag == "ndarray":
    return np.asarray(value["data"], dtype=np.dtype(value["dtype"])).reshape(value["shape"])
  raise ValueError(f"unknown {TAG} tag {tag!r}: the file was written by a newer prorl_jax; upgrade to read it")


def dumps(value: Any) -> str:
  """Encodes `value` as compact JSON text with tags (see module docstring)."""
  return json.dumps(to_jsonable(value), ensure_ascii=False, separators=(",", ":"))


def loads(text: str) -> Any:
  """Decodes text written by `dumps` (or any plain JSON)."""
  return from_jsonable(json.loads(text))
