"""Planning a run before the hardware exists: deviceless compilation of one training step for a TPU topology (or a
GPU target), per-phase memory against HBM, loop-aware FLOPs, a roofline step time, and fixes for what does not fit.

Public API:
  plan(config, topology_name, num_slices=1) -> dict   (the JSON `python -m experiments.plan` writes)
  table(result) -> str, failure_message(result) -> str
  program_cost(hlo_text, unknown_trips=...) -> ProgramCost   (loop-aware FLOPs and bytes of a compiled program)
"""

from prorl_jax.planning.hlo_cost import ProgramCost, program_cost
from prorl_jax.planning.planner import PHASES, failure_message, plan, table

__all__ = ["PHASES", "ProgramCost", "failure_message", "plan", "program_cost", "table"]
