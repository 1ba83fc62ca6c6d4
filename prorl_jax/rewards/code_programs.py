"""Test programs (HumanEval's check(candidate), MBPP's assert statements) made unforgeable by the program they test:
each straight-line assert is rewritten to report the value(s) it compares, the comparison and its expected literal
stay in this process (`holds`), and reported values are decoded from tagged plain data (`decode_value`). See
`code_reward` for the reward and SANDBOX.md, "Test programs", for the threat model.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import operator
from typing import Any


@dataclasses.dataclass(frozen=True)
class ProgramTests:
  """Validated test programs: HumanEval's check source (entry_point set; one test) or MBPP's assert statements."""
  sources: tuple[str, ...]  # (the check source,) or one statement per test
  setup: str = ""
  entry_point: str | None = None


# ---- test programs: rewriting asserts, decoding the values they report ---------------------------------------

_PLAIN, _TRUTH, _REPORT, _ENTRY = "__prorl_plain__", "__prorl_truth__", "__prorl_report__", "__prorl_entry__"
_OP_NAMES = {ast.Eq: "==", ast.NotEq: "!=", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.In: "in",
             ast.NotIn: "not in", ast.Is: "is", ast.IsNot: "is not"}
_COMPARE = {"==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le, ">": operator.gt,
            ">=": operator.ge, "in": lambda a, b: a in b, "not in": lambda a, b: a not in b,
            "is": operator.is_, "is not": operator.is_not}
_DECODE_DEPTH = 200


@dataclasses.dataclass(frozen=True)
class _ProgramPlan:
  """What enters the sandbox (rewritten sources, names, imports) and what stays here (each test's checks).

  checks[i][k] is how the k-th straight-line assert of test i is judged from the values it reported:
  ("cmp", op, "left"|"right", literal), ("cmp2", op) or ("truth", negate).
  """
  sources: tuple[str, ...]
  setup: str
  checks: tuple[tuple[tuple, ...], ...]
  names: tuple[str, ...]
  imports: tuple[str, ...]


def _call(name: str, *args: ast.expr) -> ast.Call:
  return ast.Call(ast.Name(name, ast.Load()), list(args), [])


class _Launder(ast.NodeTransformer):
  """Inside an assert: the operands of comparisons, arithmetic and `not` become plain data (`__prorl_plain__`),
  so the program's own __eq__, __lt__, __sub__ or __bool__ never decide a test. Identity checks stay as they are."""

  def visit_Compare(self, node):
    self.generic_visit(node)
    if all(isinstance(op, (ast.Is, ast.IsNot)) for op in node.ops):
      return node
    node.left = _call(_PLAIN, node.left)
    node.comparators = [_call(_PLAIN, c) for c in node.comparators]
    return node

  def visit_BinOp(self, node):
    self.generic_visit(node)
    node.left, node.right = _call(_PLAIN, node.left), _call(_PLAIN, node.right)
    return node

  def visit_UnaryOp(self, node):
    self.generic_visit(node)
    node.operand = _call(_TRUTH if isinstance(node.op, ast.Not) else _PLAIN, node.operand)
    return node


class _LaunderAsserts(ast.NodeTransformer):
  """Every assert in a tree: `assert T` -> `assert __prorl_truth__(laundered T)` (checked in the sandbox)."""

  def visit_Assert(self, node):
    node.test = _call(_TRUTH, _Launder().visit(node.test))
    return node


def _literal(node: ast.expr) -> tuple[bool, Any]:
  """(True, value) when `node` is a Python literal (what ast.literal_eval accepts), else (False, None)."""
  try:
    return True, ast.literal_eval(node)
  except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
    return False, None


def _slot(node: ast.Assert, k: int) -> tuple[ast.stmt, tuple]:
  """A straight-line assert -> (the statement reporting its value(s) as slot k, the check that stays here)."""
  test, launder = node.test, lambda e: _Launder().visit(e)

  def report(*values):
    return ast.copy_location(ast.Expr(_call(_REPORT, ast.Constant(k), *values)), node)

  if isinstance(test, ast.Compare) and len(test.ops) == 1:
    op, left, right = _OP_NAMES[type(test.ops[0])], test.left, test.comparators[0]
    (left_lit, left_value), (right_lit, right_value) = _literal(left), _literal(right)
    if left_lit != right_lit:
      literal = left_value if left_lit else right_value
      if op not in ("is", "is not") or literal is None or literal is True or literal is False:
        return report(launder(right if left_lit else left)), ("cmp", op, "left" if left_lit else "right", literal)
    elif not left_lit and op not in ("is", "is not"):
      return report(launder(left), launder(right)), ("cmp2", op)
  if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
    return report(_call(_TRUTH, launder(test.operand))), ("truth", True)
  return report(_call(_TRUTH, launder(test))), ("truth", False)


def _has_return(nodes) -> bool:
  """A `return` in these statements outside nested functions (after which later asserts may not run)."""
  todo = list(nodes)
  while todo:
    node = todo.pop()
    if isinstance(node, ast.Return):
      return True
    if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
      todo.extend(ast.iter_child_nodes(node))
  return False


def _rewrite_body(body: list[ast.stmt]) -> tuple[list[ast.stmt], tuple]:
  """Straight-line asserts of `body` become slot reports (in order); asserts nested anywhere else are laundered."""
  out, checks = [], []
  for stmt in body:
    if isinstance(stmt, ast.Assert):
      stmt, check = _slot(stmt, len(checks))
      checks.append(check)
      out.append(stmt)
    else:
      out.append(_LaunderAsserts().visit(stmt))
  return out, tuple(checks)


def _rewrite(source: str, entry_point: str | None) -> tuple[str, tuple, ast.Module]:
  """(rewritten source, its checks, the original tree). For HumanEval the checks are check()'s and the source
  ends with check(__prorl_entry__)."""
  tree, original = ast.parse(source), ast.parse(source)
  checks: tuple = ()
  if entry_point is None:
    tree.body, checks = _rewrite_body(tree.body)
  else:
    check = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "check"][-1]
    for stmt in tree.body:
      if stmt is not check:
        _LaunderAsserts().visit(stmt)
    if _has_return(check.body):  # asserts after an early return may not run: all are checked in the sandbox
      _LaunderAsserts().visit(check)
    else:
      check.body, checks = _rewrite_body(check.body)
    tree.body.append(ast.Expr(_call("check", ast.Name(_ENTRY, ast.Load()))))
  return ast.unparse(ast.fix_missing_locations(tree)), checks, original


def _imports(trees) -> set[str]:
  """Absolute module names the trees import, with their parent packages (snapshotted in the sandbox)."""
  names = set()
  for tree in trees:
    for node in ast.walk(tree):
      found = [a.name for a in node.names] if isinstance(node, ast.Import) else (
          [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else [])
      for name in found:
        parts = name.split(".")
        names.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
  return names


@functools.lru_cache(maxsize=4096)
def program_plan(tests: ProgramTests) -> _ProgramPlan:
  """Rewrites the test sources once per distinct ground truth (a training set repeats each problem n times)."""
  rewritten = [_rewrite(src, tests.entry_point) for src in tests.sources]
  setup_tree = ast.parse(tests.setup)
  trees = [t for _, _, t in rewritten] + [setup_tree]
  names = {n.id for tree in trees for n in ast.walk(tree) if isinstance(n, ast.Name)}
  names |= {tests.entry_point} if tests.entry_point else set()
  setup = ast.unparse(ast.fix_missing_locations(_LaunderAsserts().visit(setup_tree)))
  return _ProgramPlan(tuple(s for s, _, _ in rewritten), setup, tuple(c for _, c, _ in rewritten),
                      tuple(sorted(names)), tuple(sorted(_imports(trees))))


def decode_value(tagged: Any, depth: int = 0) -> Any:
  """A value reported by a test program (the harness's tagged JSON: ["i", hex], ["l", [...]], ...) -> the value.

  Raises ValueError for anything the harness would not have written.
  """
  if depth > _DECODE_DEPTH or not isinstance(tagged, list) or not tagged or not isinstance(tagged[0], str):
    raise ValueError("not a reported value")
  tag, args = tagged[0], tagged[1:]
  try:
    if tag == "n" and not args:
      return None
    if tag == "e" and not args:
      return ...
    if tag == "b" and args in ([0], [1]):
      return bool(args[0])
    if tag in ("l", "t", "S", "F", "d") and len(args) == 1 and isinstance(args[0], list):
      if tag == "d":
        return {decode_value(k, depth + 1): decode_value(v, depth + 1) for k, v in args[0]}
      items = [decode_value(v, depth + 1) for v in args[0]]
      return {"l": list, "t": tuple, "S": set, "F": frozenset}[tag](items)
    if all(isinstance(a, str) for a in args):
      if tag == "s" and len(args) == 1:
        return args[0]
      if tag == "i" and len(args) == 1:
        return int(args[0], 16)
      if tag == "f" and len(args) == 1:
        return float.fromhex(args[0])
      if tag == "c" and len(args) == 2:
        return complex(float.fromhex(args[0]), float.fromhex(args[1]))
      if tag in ("y", "Y") and len(args) == 1:
        return (bytes if tag == "y" else bytearray).fromhex(args[0])
      if tag == "r" and len(args) == 3:
        return range(*(int(a, 16) for a in args))
  except (TypeError, ValueError, OverflowError) as e:
    raise ValueError(f"not a reported value ({type(e).__name__})") from None
  raise ValueError("not a reported value")


def holds(check: tuple, values: list) -> bool:
  """Whether a straight-line assert passes, judged here from the plain values the test reported."""
  try:
    if check[0] == "cmp":
      _, op, side, literal = check
      (value,) = values
      return bool(_COMPARE[op](literal, value) if side == "left" else _COMPARE[op](value, literal))
    if check[0] == "cmp2":
      left, right = values
      return bool(_COMPARE[check[1]](left, right))
    (value,) = values
    return not value if check[1] else bool(value)
  except Exception:  # noqa: BLE001 -- e.g. TypeError ordering str against int: the assert would have raised
    return False
