"""What a study is: a base training config, named variants (config overrides), seeds, which checkpoints to evaluate
with many samples, and how the claims read the results. Read from a study config file whose `get_config()` returns
the ConfigDict `study_config()` describes; checked here, before any run starts, so a typo in a variant is one line
naming it rather than a failure an hour into the study.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import os
import pathlib
from typing import Any, Sequence

import ml_collections

from prorl_jax.config_files import field_names, load_config_file
from prorl_jax.errors import ConfigError


def study_config() -> ml_collections.ConfigDict:
  """The fields a study config sets (defaults here; `experiments/configs/study_prorl_claims.py` is the example).

  - base: the training config file every run starts from (relative paths: to the study config file).
  - overrides: "field=value" strings applied to every run (as `--config.field=value` on the command line).
  - variants: {name: ("field=value", ...)}; "" or () for the base itself.
  - seeds: training seeds; every variant runs once per seed (`seed=N` is added to its overrides).
  - parallel: training runs at a time (separate processes).
  - eval: the large-k evaluation of chosen checkpoints (`steps`; 0 is the base model, evaluated once),
    `variants` ("" = all), `benchmarks` (a dataset spec with one benchmark per difficulty), `num_samples` (k),
    `limit` (problems per benchmark spec), `temperature`, `top_p`, `max_new_tokens` (0 = the run's).
  - claims: the names the verdicts use: the `easy` and `hard` benchmarks, the variant each claim compares,
    `min_effect` (a change smaller than this is noise), `target_fraction` (claim d's target score).
  - smoke: overrides of these study fields for `--smoke` (a few steps, two variants, one seed; `parallel` runs at a
    time: a smoke run is mostly start-up and compilation, which overlap well even on two cores).
  """
  c = ml_collections.ConfigDict()
  c.base = ""
  c.overrides = ()
  c.variants = ml_collections.ConfigDict()
  c.seeds = (0,)
  c.parallel = 1
  c.eval = ml_collections.ConfigDict(dict(steps=(0,), variants="", benchmarks="", num_samples=64, limit=0,
                                          temperature=1.0, top_p=1.0, max_new_tokens=0, batch_prompts=64))
  c.claims = ml_collections.ConfigDict(dict(easy="", hard="", full="prorlv2", no_reset="no_reset",
                                            symmetric_clip="symmetric_clip", no_dynamic_sampling="no_dynamic_sampling",
                                            min_effect=0.02, target_fraction=0.8))
  c.smoke = ml_collections.ConfigDict(dict(variants="", seeds=(0,), overrides=(), eval_steps=(0,), eval_limit=2,
                                           eval_num_samples=4, parallel=2))
  return c


@dataclasses.dataclass(frozen=True)
class Run:
  """One (variant, seed) training run: its directory and the overrides that make its config."""

  variant: str
  seed: int
  overrides: tuple[str, ...]
  workdir: pathlib.Path

  @property
  def name(self) -> str:
    return f"{self.variant}/seed{self.seed}"


@dataclasses.dataclass(frozen=True)
class Study:
  """A resolved study: the base config file and every run, with the evaluation and claim settings."""

  base_file: pathlib.Path
  base: ml_collections.ConfigDict  # the base config with the study's overrides (seed 0)
  runs: tuple[Run, ...]
  variants: tuple[str, ...]
  seeds: tuple[int, ...]
  eval: ml_collections.ConfigDict
  claims: ml_collections.ConfigDict
  parallel: int
  total_steps: int
  workdir: pathlib.Path
  common_overrides: tuple[str, ...] = ()  # applied to every run, before the variant's own

  def run_config(self, run: Run) -> ml_collections.ConfigDict:
    return apply_overrides(load_config_file(self.base_file), run.overrides, what=f"variant {run.variant!r}")

  def eval_steps(self) -> tuple[int, ...]:
    return tuple(sorted({int(s) for s in self.eval.steps}))

  def eval_variants(self) -> tuple[str, ...]:
    names = [v for v in str(self.eval.variants).split(",") if v] or list(self.variants)
    return tuple(v for v in names if v in self.variants)


def _parse_value(text: str, current: Any, field: str, what: str) -> Any:
  if isinstance(current, str):
    return text
  try:
    value = ast.literal_eval(text)
  except (ValueError, SyntaxError):
    if isinstance(current, bool) and text.lower() in ("true", "false"):
      return text.lower() == "true"
    raise ConfigError(f"{what}: {field}={text!r} is not a Python literal like the field's current "
                      f"{current!r}") from None
  if isinstance(current, bool) and not isinstance(value, bool):
    raise ConfigError(f"{what}: {field}={text!r} must be True or False")
  if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
    value = float(value)
  if isinstance(current, tuple) and isinstance(value, (list, tuple)):
    value = tuple(value)
  if current is not None and not isinstance(value, type(current)):
    raise ConfigError(f"{what}: {field}={text!r} is a {type(value).__name__}, the field is a "
                      f"{type(current).__name__} (now {current!r})")
  return value


def apply_overrides(config: ml_collections.ConfigDict, overrides: Sequence[str], *,
                    what: str) -> ml_collections.ConfigDict:
  """Applies "field=value" strings (the syntax of `--config.field=value`) to `config` in place and returns it.
  A field the config lacks or a value of the wrong type is a `ConfigError` naming `what` and the closest field."""
  fields = field_names(config)
  for item in overrides:
    name, sep, text = str(item).partition("=")
    name = name.strip().removeprefix("--config.")
    if not sep or not name:
      raise ConfigError(f"{what}: override {item!r} must look like field=value, e.g. algorithm.clip_high=0.2")
    if name not in fields:
      close = difflib.get_close_matches(name, fields, n=1, cutoff=0.6)
      raise ConfigError(f"{what}: the training config has no field {name!r}"
                        + (f"; did you mean {close[0]!r}?" if close else ""))
    parent, _, leaf = name.rpartition(".")
    node = config
    for part in filter(None, parent.split(".")):
      node = node[part]
    if isinstance(node[leaf], ml_collections.ConfigDict):
      raise ConfigError(f"{what}: {name!r} is a group of fields; override one of its fields")
    try:
      node[leaf] = _parse_value(text.strip(), node[leaf], name, what)
    except TypeError as e:  # ml_collections' own type check
      raise ConfigError(f"{what}: {name}={text.strip()!r}: {e}") from None
  return config


def _check_study_fields(config: ml_collections.ConfigDict, reference: ml_collections.ConfigDict) -> None:
  for key, value in config.items():
    if key not in reference:
      close = difflib.get_close_matches(key, list(reference), n=1)
      raise ConfigError(f"study config: unknown field {key!r}" + (f"; did you mean {close[0]!r}?" if close else
                                                                   f"; fields: {sorted(reference)}"))
    if key != "variants" and isinstance(value, ml_collections.ConfigDict):
      for sub in value:
        if sub not in reference[key]:
          close = difflib.get_close_matches(sub, list(reference[key]), n=1)
          raise ConfigError(f"study config: unknown field '{key}.{sub}'"
                            + (f"; did you mean '{key}.{close[0]}'?" if close else ""))


def as_overrides(value: Any, what: str) -> tuple[str, ...]:
  """A variant's overrides as a tuple of strings ("" and None are none)."""
  if value in ("", None):
    return ()
  if isinstance(value, str):
    return tuple(value.split())
  if isinstance(value, (tuple, list)) and all(isinstance(v, str) for v in value):
    return tuple(value)
  raise ConfigError(f"{what} must be a tuple of 'field=value' strings, got {value!r}")


def resolve(config: ml_collections.ConfigDict, config_file: str | os.PathLike, workdir: str | os.PathLike, *,
            smoke: bool = False, variants: Sequence[str] = (), seeds: Sequence[int] = ()) -> Study:
  """The study a study config describes, with `--smoke`, `--variants` and `--seeds` applied; every run's training
  config is built and validated here.

  Raises:
    ConfigError: an unknown study field, variant, training field or value, naming it.
  """
  from prorl_jax.training import config as training_config  # the trainer's own validation of each run's config

  _check_study_fields(config, study_config())
  config = ml_collections.ConfigDict(config.to_dict())
  if not config.base:
    raise ConfigError("study config: 'base' must name the training config file every run starts from")
  base_file = pathlib.Path(config.base)
  if not base_file.is_absolute():
    base_file = (pathlib.Path(config_file).resolve().parent / base_file).resolve()
  overrides = as_overrides(config.overrides, "study config 'overrides'")
  all_variants = {name: as_overrides(value, f"variant {name!r}") for name, value in config.variants.items()}
  if not all_variants:
    raise ConfigError("study config: 'variants' is empty; name at least one, e.g. variants.prorlv2 = ()")
  chosen_seeds = tuple(int(s) for s in (seeds or config.seeds))
  chosen = list(variants)
  eval_config = ml_collections.ConfigDict(config.eval.to_dict())
  if smoke:
    s = config.smoke
    chosen = chosen or [v for v in str(s.variants).split(",") if v]
    chosen_seeds = tuple(int(x) for x in (seeds or s.seeds))
    overrides = overrides + as_overrides(s.overrides, "study config 'smoke.overrides'")
    eval_config.steps = tuple(s.eval_steps)
    eval_config.limit = int(s.eval_limit)
    eval_config.num_samples = int(s.eval_num_samples)
  parallel = int(config.smoke.parallel if smoke else config.parallel)
  unknown = [v for v in chosen if v not in all_variants]
  if unknown:
    raise ConfigError(f"--variants: unknown variant(s) {unknown}; the study has {sorted(all_variants)}")
  # ConfigDicts keep no key order: the compared-against variant (claims.full) first, then the others sorted.
  names = tuple(sorted(chosen or all_variants, key=lambda v: (v != config.claims.full, v)))
  if not chosen_seeds or len(set(chosen_seeds)) != len(chosen_seeds):
    raise ConfigError(f"seeds must be distinct integers, got {chosen_seeds}")
  workdir = pathlib.Path(workdir)
  base = apply_overrides(load_config_file(base_file), overrides, what="study config 'overrides'")
  runs = []
  for name in names:
    for seed in chosen_seeds:
      run = Run(variant=name, seed=seed, overrides=overrides + all_variants[name] + (f"seed={seed}",),
                workdir=workdir / "runs" / name / f"seed{seed}")
      run_config = apply_overrides(load_config_file(base_file), run.overrides, what=f"variant {name!r}")
      training_config.validate(run_config)
      runs.append(run)
  steps, every = int(base.total_steps), int(base.checkpoint_every)
  bad_steps = [s for s in eval_config.steps if not (0 <= int(s) <= steps and (int(s) % every == 0 or s == steps))]
  if bad_steps:
    raise ConfigError(f"eval.steps {list(bad_steps)}: a step to evaluate must be a checkpointed step of the runs "
                      f"(0..{steps}, a multiple of checkpoint_every={every}, or the last)")
  kept = steps // every + 2
  if int(base.checkpoint.keep_latest) < kept:
    raise ConfigError(f"checkpoint.keep_latest={base.checkpoint.keep_latest} would delete checkpoints the study "
                      f"evaluates; add 'checkpoint.keep_latest={kept}' to the study's overrides")
  return Study(base_file=base_file, base=base, runs=tuple(runs), variants=names, seeds=chosen_seeds,
               eval=eval_config, claims=ml_collections.ConfigDict(config.claims.to_dict()),
               parallel=max(1, parallel), total_steps=steps, workdir=workdir,
               common_overrides=overrides)
