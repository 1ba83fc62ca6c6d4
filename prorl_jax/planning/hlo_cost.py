"""FLOPs and bytes of a compiled program with its loops counted as many times as they run.

XLA's cost analysis (`compiled.cost_analysis()`) visits each `while` body once: a decode loop of 8,192 steps, or a
scan over 16 LM-head chunks, is counted as one step. This module re-counts from the optimized per-device HLO of the
executable: for every computation C,

  total(C) = cost(C) + sum over the while loops w that C runs of  trips(w) * total(body(w)) - cost(body(w))

where cost(X) is XLA's `HloCostAnalysis` of the module re-rooted at X (each nested body once, as XLA counts it).
Trip counts come from the loop's condition (`counter < N` with a constant start, as `lax.scan` / `fori_loop`
lower) or, for data-dependent loops (the decode `while_loop`), from the caller. Pallas/Mosaic kernels
(`tpu_custom_call`) add the FLOPs and bytes of the `CostEstimate` they carry (the decode kernel declares its whole
cache: an upper bound, as it reads only each row's valid prefix). XLA's HloCostAnalysis of the CPU client
runs on the TPU or GPU program's HLO: FLOPs are exact per op; bytes are unpadded array sizes of each op's
operands and outputs (the TPU's own analysis counts tiled layouts, so its bytes differ by a few percent).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

_COMP_START = re.compile(r"^(ENTRY )?%([\w.\-]+) \(")
_WHILE = re.compile(r"^\s*%[\w.\-]+ = .* while\(%([\w.\-]+)\), condition=%([\w.\-]+), body=%([\w.\-]+)")
_CALLS = re.compile(r"(?:calls|to_apply|branch_computations|called_computations)=\{?([%\w.\-, ]+)\}?")
_OP_NAME = re.compile(r'op_name="([^"]*)"')
_COST_ESTIMATE = re.compile(r'"cost_estimate":\{"flops":"(\d+)","transcendentals":"(\d+)","bytes_accessed":"(\d+)"')
_INSTR = re.compile(r"^\s*(?:ROOT )?%([\w.\-]+) = (.*)$")
_NAME = re.compile(r"%([\w.\-]+)")


@dataclasses.dataclass(frozen=True)
class Loop:
  """A while loop of the program: where it is (`op_name` of its metadata), how often it runs, and how we know."""

  body: str
  op_name: str
  trips: int
  known: bool  # from the loop's condition; False: the caller's count for a data-dependent loop


@dataclasses.dataclass(frozen=True)
class ProgramCost:
  """Per-device cost of one execution of a program, loops counted `trips` times."""

  flops: float
  bytes_accessed: float
  transcendentals: float
  loops: tuple[Loop, ...]
  custom_calls: tuple[str, ...]  # "target:name" of every custom call (kernels)

  def as_dict(self) -> dict[str, Any]:
    return {"flops": self.flops, "bytes_accessed": self.bytes_accessed, "transcendentals": self.transcendentals,
            "loops": [dataclasses.asdict(l) for l in self.loops], "custom_calls": list(self.custom_calls)}


class _Module:
  """The computations of an HLO module's text, and its while loops."""

  def __init__(self, text: str):
    self.text = text
    lines = text.splitlines()
    self.header_end = next(i for i, l in enumerate(lines) if l.startswith("HloModule"))
    self.blocks: dict[str, list[str]] = {}
    self._refs: dict[str, set[str]] = {}
    self.entry = ""
    self.prelude: list[str] = []  # metadata sections (file names, stack frames) the instructions refer to
    current: list[str] | None = None
    for line in lines[self.header_end + 1:]:
      match = _COMP_START.match(line)
      if match:
        current = [line]
        self.blocks[match.group(2)] = current
        if match.group(1):
          self.entry = match.group(2)
        continue
      if current is None:
        self.prelude.append(line)
        continue
      current.append(line)
      if line.startswith("}"):
        current = None

  def instructions(self, comp: str) -> list[str]:
    return self.blocks[comp][1:-1]

  def callees(self, comp: str) -> set[str]:
    """Computations `comp` runs other than through while loops (fusions, calls, conditional branches)."""
    out = set()
    for line in self.instructions(comp):
      if _WHILE.match(line):
        continue
      for group in _CALLS.findall(line):
        out.update(name.strip().lstrip("%") for name in group.split(",") if name.strip())
    return {c for c in out if c in self.blocks}

  def reachable(self, comp: str) -> list[str]:
    """`comp` and every computation it runs, not entering while bodies."""
    seen, stack = [], [comp]
    while stack:
      c = stack.pop()
      if c in seen:
        continue
      seen.append(c)
      stack.extend(self.callees(c))
    return seen

  def references(self, comp: str) -> set[str]:
    """Every computation `comp`'s instructions name (callees, loop bodies and conditions, branches)."""
    if comp not in self._refs:
      names = set(_NAME.findall("\n".join(self.instructions(comp))))
      self._refs[comp] = {n for n in names if n in self.blocks and n != comp}
    return self._refs[comp]

  def rooted_at(self, comp: str) -> str:
    """A module of `comp` (as its entry computation) and the computations it needs, in the original order."""
    needed, stack = set(), [comp]
    while stack:
      c = stack.pop()
      if c not in needed:
        needed.add(c)
        stack.extend(self.references(c))
    out = ["HloModule rooted_" + re.sub(r"[^\w]", "_", comp)] + self.prelude
    for name, block in self.blocks.items():
      if name not in needed:
        continue
      first = block[0][len("ENTRY "):] if block[0].startswith("ENTRY ") else block[0]
      out.append(("ENTRY " + first) if name == comp else first)
      out.extend(block[1:])
    return "\n".join(out)

  def constant(self, comp: str, name: str, depth: int = 0) -> int | None:
    """The integer value of instruction `name` in `comp`, through copies and converts; None if not a constant."""
    for line in self.instructions(comp):
      match = _INSTR.match(line)
      if not match or match.group(1) != name:
        continue
      body = match.group(2)
      const = re.search(r"\bconstant\((-?\d+)\)", body)
      if const:
        return int(const.group(1))
      via = re.search(r"\b(?:copy|convert|bitcast)\(%([\w.\-]+)\)", body)
      if via and depth < 8:
        return self.constant(comp, via.group(1), depth + 1)
      return None
    return None

  def _binary(self, comp: str, line: str, op: str, attr: str = "") -> tuple[str, str] | None:
    """The two operands of `line` (in `comp`) if it is `op(a, b)` with `attr`, directly or as a fusion whose root is
    that op on two of its parameters (XLA:CPU wraps scalar compares and adds so)."""
    direct = re.search(rf"\b{op}\(%([\w.\-]+), %([\w.\-]+)\)", line)
    if direct and attr in line:
      return direct.group(1), direct.group(2)
    fused = re.search(r"\bfusion\((.*?)\), kind=\w+, calls=%([\w.\-]+)", line)
    if not fused or fused.group(2) not in self.blocks:
      return None
    args = [a.strip().lstrip("%") for a in fused.group(1).split(",")]
    inner = self.instructions(fused.group(2))
    root = next((l for l in inner if l.lstrip().startswith("ROOT ")), "")
    pair = re.search(rf"\b{op}\(%([\w.\-]+), %([\w.\-]+)\)", root)
    if not pair or attr not in root:
      return None
    index = {}
    for l in inner:
      param = re.match(r"^\s*%([\w.\-]+) = .* parameter\((\d+)\)", l)
      if param:
        index[param.group(1)] = int(param.group(2))
    if any(p not in index or index[p] >= len(args) for p in pair.groups()):
      return None
    return args[index[pair.group(1)]], args[index[pair.group(2)]]

  def _step(self, body: str, index: int) -> int:
    """How much a loop body adds to tuple element `index` per trip (1 unless it is `x + constant`)."""
    root = next((l for l in self.instructions(body) if l.lstrip().startswith("ROOT ")), "")
    operands = re.search(r"tuple\((.*)\)", root)
    if not operands:
      return 1
    names = [re.sub(r"/\*.*?\*/", "", o).strip().lstrip("%") for o in operands.group(1).split(",")]
    line = next((l for l in self.instructions(body) if index < len(names)
                 and re.match(rf"^\s*%{re.escape(names[index])} = ", l)), "")
    added = self._binary(body, line, "add")
    if not added:
      return 1
    steps = [self.constant(body, n) for n in added]
    return next((s for s in steps if s), 1)

  def trip_count(self, comp: str, while_line: str, cond: str, body: str = "") -> int | None:
    """Trips of a `counter < N` loop with a constant start and step (how scans, fori_loops and XLA's windowed
    collective matmuls lower), else None."""
    known = re.search(r'"known_trip_count":\{"n":"(\d+)"\}', while_line)
    if known:
      return int(known.group(1))
    root = next((l for l in self.instructions(cond) if l.lstrip().startswith("ROOT ")), "")
    pair = self._binary(cond, root, "compare", "direction=LT")
    if not pair:
      return None
    counter, bound = pair
    limit = self.constant(cond, bound)
    gte = next((l for l in self.instructions(cond) if l.lstrip().startswith(f"%{counter} =")), "")
    index = re.search(r"get-tuple-element\(.*\), index=(\d+)", gte)
    if limit is None or not index:
      return None
    init_tuple = re.search(r"while\(%([\w.\-]+)\)", while_line).group(1)
    tuple_line = next((l for l in self.instructions(comp) if l.lstrip().startswith(f"%{init_tuple} =")), "")
    operands = re.search(r"tuple\((.*)\)", tuple_line)
    if not operands:
      return None
    names = [re.sub(r"/\*.*?\*/", "", o).strip().lstrip("%") for o in operands.group(1).split(",")]
    k = int(index.group(1))
    start = self.constant(comp, names[k]) if k < len(names) else None
    if start is None:
      return None
    step = self._step(body, k) if body else 1
    return max(-(-(limit - start) // step), 0) if step > 0 else None


def _analysis(module_text: str) -> dict[str, float]:
  import jax
  from jax._src.lib import _jax
  from jaxlib import _hlo
  module = _hlo.hlo_module_from_text(module_text)
  return _jax.hlo_module_cost_analysis(jax.devices("cpu")[0].client, module)


def _custom_call_cost(line: str) -> tuple[float, float, float]:
  """(flops, transcendentals, bytes accessed) a Pallas kernel's `CostEstimate` declares, or zeros."""
  match = _COST_ESTIMATE.search(line)
  return (float(match.group(1)), float(match.group(2)), float(match.group(3))) if match else (0.0, 0.0, 0.0)


def custom_calls(hlo_text: str) -> list[str]:
  """"target:name" of every custom call in an HLO module's text, e.g. "tpu_custom_call:decode_attention_tpu.1"."""
  out = []
  for line in hlo_text.splitlines():
    target = re.search(r'custom_call_target="([^"]+)"', line)
    match = _INSTR.match(line)
    if target and match:
      out.append(f"{target.group(1)}:{match.group(1)}")
  return out


def program_cost(hlo_text: str, *, unknown_trips: int = 1) -> ProgramCost:
  """Loop-aware cost of the optimized HLO module `hlo_text` (`compiled.as_text()`), per device.

  Args:
    unknown_trips: trips assumed for a while loop whose count the HLO does not fix (a data-dependent loop such as
      the decode loop); such loops are reported with `known=False`.
  """
  module = _Module(hlo_text)
  cache: dict[str, dict[str, float]] = {}
  totals: dict[str, dict[str, float]] = {}
  loops: list[Loop] = []

  def once(comp: str) -> dict[str, float]:
    if comp not in cache:
      raw = _analysis(module.rooted_at(comp))
      stats = {"flops": raw.get("flops", 0.0), "bytes": raw.get("bytes accessed", 0.0),
               "transcendentals": raw.get("transcendentals", 0.0)}
      for c in module.reachable(comp):  # kernels' own estimates (XLA's analysis sees a custom call as no work)
        for line in module.instructions(c):
          flops, trans, nbytes = _custom_call_cost(line)
          stats["flops"] += flops
          stats["transcendentals"] += trans
          stats["bytes"] += nbytes
      cache[comp] = stats
    return cache[comp]

  def total(comp: str) -> dict[str, float]:
    if comp in totals:
      return totals[comp]
    out = dict(once(comp))
    for c in module.reachable(comp):
      for line in module.instructions(c):
        match = _WHILE.match(line)
        if not match:
          continue
        _, cond, body = match.groups()
        trips = module.trip_count(c, line, cond, body)
        op = _OP_NAME.search(line)
        loops.append(Loop(body, op.group(1) if op else body, unknown_trips if trips is None else trips,
                          trips is not None))
        n = unknown_trips if trips is None else trips
        inner, body_once = total(body), once(body)
        for key in out:
          out[key] += n * inner[key] - body_once[key]
    totals[comp] = out
    return out

  result = total(module.entry)
  return ProgramCost(flops=result["flops"], bytes_accessed=result["bytes"],
                     transcendentals=result["transcendentals"], loops=tuple(loops),
                     custom_calls=tuple(custom_calls(hlo_text)))


def compiler_cost(compiled: Any) -> dict[str, float]:
  """The compiler's own analysis (loop bodies counted once): flops, bytes accessed, optimal_seconds (TPU), or {}
  where the platform has none (the CUDA compiler without a GPU)."""
  try:
    raw = compiled.cost_analysis()
  except Exception:  # pragma: no cover - some platforms raise instead of returning None
    return {}
  if isinstance(raw, (list, tuple)):
    raw = raw[0] if raw else None
  if not raw:
    return {}
  out = {"flops": float(raw.get("flops", 0.0)), "bytes_accessed": float(raw.get("bytes accessed", 0.0))}
  if raw.get("optimal_seconds", -1.0) > 0:
    out["optimal_seconds"] = float(raw["optimal_seconds"])
  return out


