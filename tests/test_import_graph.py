"""The import graph of `prorl_jax` has no cycle: between subpackages, and between modules.

Imports are read from the source (`ast`), so the ones inside functions (lazy imports) and under `TYPE_CHECKING`
count like the others: a lazy import that hides a cycle is still a cycle.
"""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent / "prorl_jax"


def _modules() -> dict[str, pathlib.Path]:
  out = {}
  for path in ROOT.rglob("*.py"):
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
    out[name] = path
  return out


def _imports(name: str, path: pathlib.Path, modules: dict[str, pathlib.Path]) -> set[str]:
  """The `prorl_jax` modules `name` imports anywhere in its source, each resolved to the deepest existing module."""
  package = name if path.name == "__init__.py" else name.rpartition(".")[0]
  found = set()
  for node in ast.walk(ast.parse(path.read_text(), str(path))):
    if isinstance(node, ast.Import):
      targets = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:
        anchor = package.split(".")[:len(package.split(".")) - (node.level - 1)]
        base = ".".join(anchor + ([node.module] if node.module else []))
      targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
    else:
      continue
    for target in targets:
      while target and target not in modules:
        target = target.rpartition(".")[0]
      if target.startswith("prorl_jax") and target != name:
        found.add(target)
  return found


def _graph() -> dict[str, set[str]]:
  modules = _modules()
  return {name: _imports(name, path, modules) for name, path in modules.items()}


def _subpackage(module: str) -> str:
  parts = module.split(".")
  return parts[1] if len(parts) > 1 else ""


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
  """One cycle of `graph` as a list of nodes (first == last), or None."""
  state: dict[str, int] = {}
  stack: list[str] = []

  def visit(node: str) -> list[str] | None:
    state[node] = 1
    stack.append(node)
    for nxt in sorted(graph.get(node, ())):
      if state.get(nxt) == 1:
        return stack[stack.index(nxt):] + [nxt]
      if nxt not in state and (found := visit(nxt)):
        return found
    state[node] = 2
    stack.pop()
    return None

  for node in sorted(graph):
    if node not in state and (found := visit(node)):
      return found
  return None


def test_no_cycle_between_subpackages():
  edges: dict[str, set[str]] = {}
  witness: dict[tuple[str, str], str] = {}
  for module, targets in _graph().items():
    for target in targets:
      a, b = _subpackage(module), _subpackage(target)
      if a and b and a != b:
        edges.setdefault(a, set()).add(b)
        witness.setdefault((a, b), f"{module} imports {target}")
  cycle = _cycle(edges)
  assert cycle is None, "import cycle between subpackages: " + " -> ".join(cycle) + "\n" + "\n".join(
      witness[(a, b)] for a, b in zip(cycle, cycle[1:]))


def test_no_cycle_between_modules():
  cycle = _cycle(_graph())
  assert cycle is None, "import cycle between modules: " + " -> ".join(cycle)


def test_the_layering_the_readme_describes():
  """The directions the house is built on: algorithms and models import nothing of ours but neutral modules
  (errors), kernels are outside the package, rewards never see the model, evaluation knows no trainer."""
  allowed = {
      "algorithms": set(),
      "models": {"errors"},
      "parallel": {"errors", "models", "platform_env"},
      "rewards": set(),
      "evaluation": {"algorithms", "data", "rewards", "rollout"},
  }
  graph = _graph()
  for package, ok in allowed.items():
    used = {_subpackage(t) for m, ts in graph.items() if _subpackage(m) == package for t in ts} - {package, ""}
    assert used <= ok, f"prorl_jax.{package} imports {sorted(used - ok)}; allowed: {sorted(ok)}"


def test_the_checker_finds_a_lazy_cycle(tmp_path, monkeypatch):
  """The test above can fail: a cycle made only of an import inside a function is found."""
  pkg = tmp_path / "prorl_jax"
  (pkg / "a").mkdir(parents=True)
  (pkg / "b").mkdir()
  (pkg / "__init__.py").write_text("")
  (pkg / "a" / "__init__.py").write_text("from prorl_jax.b import thing\n")
  (pkg / "b" / "__init__.py").write_text("def thing():\n  from prorl_jax.a import other  # lazy\n")
  monkeypatch.setattr(__import__(__name__), "ROOT", pkg)
  assert _cycle(_graph()) is not None
  with pytest.raises(AssertionError, match="prorl_jax.a"):
    test_no_cycle_between_subpackages()


def test_training_has_one_code_path():
  """No branch in `prorl_jax.training` on whether a run is sharded (`mesh is None`, `state_sharding is not None`,
  `if sharded`): a one-device run is a mesh of one device."""
  placement = {"mesh", "state_sharding", "batch_sharding", "sharded"}

  def name(node):
    return node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else None

  found = []
  for path in sorted((ROOT / "training").glob("*.py")):
    for node in ast.walk(ast.parse(path.read_text())):
      if not isinstance(node, (ast.If, ast.IfExp)):
        continue
      for test in ast.walk(node.test):
        none_check = (isinstance(test, ast.Compare) and name(test.left) in placement
                      and any(isinstance(c, ast.Constant) and c.value is None for c in test.comparators))
        if none_check or name(test) == "sharded":
          found.append(f"{path.name}:{node.lineno}")
  assert not found, f"branches on placement in training/: {found}"
