"""Instruction following: the IFEval benchmark and an IFEval-style training set (ProRL's IF domain, P1 §3.1).

Layouts:
  google/IFEval, train (541 prompts): key, prompt, instruction_id_list, kwargs (one dict per instruction; the hub
    version fills every possible argument with None, which the schema drops).
  Training (`ifeval_train`): ProRL trained on Llama-Nemotron's synthetic IFEval-style prompts. NVIDIA publishes RL
    instruction-following data as nvidia/Llama-Nemotron-Post-Training-Dataset, config "RL", split
    "instruction_following" (56k rows); its column layout is not documented in the sources available here
    [UNCONFIRMED], so the converter accepts the IFEval columns at the top level (google/IFEval, also
    argilla/ifeval-like-data) or inside one dict column ("args", "ground_truth", "reward_model", "metadata",
    "verification_info"; dict or JSON text), and the prompt as "prompt" text or "input"/"messages" chat turns.
    Rows whose instruction ids the IFEval verifier does not know are dropped (counted in the log).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from prorl_jax.data.schema import Example
from prorl_jax.data.sources._rows import HubLocation, Row, column, first_column, maybe_json
from prorl_jax.data.sources.registry import Context, SourceSpec

_IFEVAL_LAYOUT = "google/IFEval (key, prompt, instruction_id_list, kwargs)"
_NESTED = ("args", "ground_truth", "reward_model", "metadata", "verification_info")


def convert_ifeval(row: Row, ctx: Context) -> Example:
  """google/IFEval row -> ifeval Example."""
  truth = {"instruction_id_list": column(row, "instruction_id_list", ctx.where, layout=_IFEVAL_LAYOUT),
           "kwargs": column(row, "kwargs", ctx.where, layout=_IFEVAL_LAYOUT)}
  prompt = str(column(row, "prompt", ctx.where, layout=_IFEVAL_LAYOUT))
  return ctx.example(id=str(row.get("key", ctx.index)), domain="ifeval", prompt=prompt, ground_truth=truth)


def _find_truth(row: Row) -> Mapping[str, Any] | None:
  if row.get("instruction_id_list") is not None:
    return row
  for name in _NESTED:
    value = maybe_json(row.get(name))
    if isinstance(value, Mapping):
      for candidate in (value, maybe_json(value.get("ground_truth"))):
        if isinstance(candidate, Mapping) and candidate.get("instruction_id_list") is not None:
          return candidate
  return None


def convert_ifeval_train(row: Row, ctx: Context) -> Example | None:
  """IFEval-style training row (see the module docstring) -> ifeval Example; None for unknown instruction ids."""
  found = _find_truth(row)
  if found is None:
    raise ctx.error("instruction_id_list", "is missing at the top level and in " + "/".join(_NESTED),
                    f"columns present: {sorted(row)}; expected IFEval's instruction_id_list + kwargs")
  ids = maybe_json(found["instruction_id_list"])
  kwargs = maybe_json(found.get("kwargs"))
  if ctx.options["drop_unknown_ids"] and (not isinstance(ids, list) or any(i not in _known_ids() for i in ids)):
    return None
  name, prompt = first_column(row, ("prompt", "input", "messages"), ctx.where, layout="prompt text or chat turns")
  prompt = maybe_json(prompt)
  fields: dict[str, Any] = {}
  if isinstance(prompt, list):
    turns = [{"role": m.get("role"), "content": m.get("content")} if isinstance(m, Mapping) else m for m in prompt]
    fields["messages"] = [m for m in turns if ctx.options["keep_system_prompt"]
                          or not (isinstance(m, Mapping) and m["role"] == "system")]  # the schema checks the rest
  else:
    fields["prompt"] = str(prompt)
  row_id = row.get("key", row.get("id", row.get("uuid", ctx.index)))
  return ctx.example(id=str(row_id), domain="ifeval", ground_truth={"instruction_id_list": ids, "kwargs": kwargs},
                     extra={"prompt_column": name}, **fields)


@functools.lru_cache(maxsize=1)
def _known_ids() -> frozenset[str]:
  from prorl_jax.rewards.ifeval_reward import IFEVAL_INSTRUCTION_IDS  # pylint: disable=g-import-not-at-top
  return frozenset(IFEVAL_INSTRUCTION_IDS)


INSTRUCTION_BENCHMARKS: Mapping[str, SourceSpec] = {s.name: s for s in (
    SourceSpec(name="ifeval", kind="benchmark", domain="ifeval", hub=HubLocation("google/IFEval", split="train"),
               convert=convert_ifeval, layout=_IFEVAL_LAYOUT, description="IFEval, 541 prompts"),
)}

INSTRUCTION_TRAINING: Mapping[str, SourceSpec] = {s.name: s for s in (
    SourceSpec(name="ifeval_train", kind="training", domain="ifeval",
               hub=HubLocation("nvidia/Llama-Nemotron-Post-Training-Dataset", configs=("RL",),
                               split="instruction_following"),
               convert=convert_ifeval_train, layout="IFEval columns, top level or nested",
               description="IFEval-style instruction prompts with verifiable constraints (ProRL's IF domain)",
               defaults={"drop_unknown_ids": True, "keep_system_prompt": False}),
)}
