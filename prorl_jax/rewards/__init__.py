"""Rule-based rewards for the five ProRL domains (ALGORITHMS.md §12) and their sandboxed, parallel execution.

  score(domain, response, ground_truth) -> float      one item; never hangs
  RewardManager(...).score_batch(domains, responses, ground_truths) -> RewardBatch   the trainer's path

Ground truth per domain: math -- the answer string; code -- {"inputs", "outputs", optional "fn_name"}, HumanEval's
{"test", "entry_point"} or MBPP's {"assert_tests", optional "setup"} (or its JSON string; see code_reward);
logic -- {"task": Reasoning Gym task name, "entry": the dataset entry}; stem -- the correct letter;
ifeval -- {"instruction_id_list", "kwargs"} in IFEval's format.

How `score` stays bounded: "code" runs in this process, because all it does here is text extraction and output
comparison while the program itself runs in the sandbox under its own wall-clock budget. Every other domain goes
to a lazily started, shared one-worker RewardManager with a per-item timeout (a pathological expression that
hangs math-verify costs one worker restart, not the caller); an item that times out or crashes scores 0 with a
logged warning. A ValueError raised by a verifier (malformed ground truth: a dataset bug) is re-raised here.
Submodules import lazily, so `import prorl_jax.rewards` stays cheap.
"""

from __future__ import annotations

import atexit
import threading
from typing import TYPE_CHECKING, Any

from prorl_jax.rewards.domains import DOMAIN_NAMES, DOMAINS, SOLVED_THRESHOLD, domain_function

if TYPE_CHECKING:
  from prorl_jax.rewards.manager import ItemInfo, RewardBatch, RewardManager

__all__ = ["DOMAINS", "DOMAIN_NAMES", "SOLVED_THRESHOLD", "ItemInfo", "RewardBatch", "RewardManager", "domain_function",
           "score", "shutdown_default_manager"]

DEFAULT_TIMEOUT_S = 30.0  # per item for the non-code domains behind `score`
_IN_PROCESS = {"code"}
_LAZY = {"ItemInfo", "RewardBatch", "RewardManager"}
_default: RewardManager | None = None
_default_lock = threading.Lock()
_atexit_registered: list[bool] = []


def __getattr__(name: str) -> Any:
  if name in _LAZY:  # keeps `import prorl_jax.rewards` (and every worker start) free of numpy
    from prorl_jax.rewards import manager  # noqa: PLC0415
    return getattr(manager, name)
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _default_manager() -> RewardManager:
  global _default
  with _default_lock:
    if _default is None:
      from prorl_jax.rewards.manager import RewardManager  # noqa: PLC0415
      _default = RewardManager(num_workers=1, timeout_s=DEFAULT_TIMEOUT_S, preload=())  # import on first use
      if not _atexit_registered:
        atexit.register(shutdown_default_manager)
        _atexit_registered.append(True)
    return _default


def shutdown_default_manager() -> None:
  """Stops the worker behind `score` (it restarts on the next call)."""
  global _default
  with _default_lock:
    if _default is not None:
      _default.close()
      _default = None


def score(domain: str, response: str, ground_truth: Any, *, timeout_s: float | None = None) -> float:
  """Reward of one response in [0, 1] (ALGORITHMS.md §12); 0 when the verifier times out or crashes.

  timeout_s: for "code" the whole program's budget (default 5 s, as ProRL); for the other domains the verifier's
  limit (default DEFAULT_TIMEOUT_S). Raises ValueError for an unknown domain (listing the known ones) or a
  malformed ground truth.
  """
  domain_function(domain)
  if domain in _IN_PROCESS:
    from prorl_jax.rewards.code_reward import score_code  # noqa: PLC0415 -- lazy on purpose
    return score_code(response, ground_truth, **({} if timeout_s is None else {"timeout_s": timeout_s}))
  value, info = _default_manager().score_one(domain, response, ground_truth,
                                             timeout_s=DEFAULT_TIMEOUT_S if timeout_s is None else timeout_s)
  if info.status == "error" and info.error_type == "ValueError":
    raise ValueError(f"{domain} verifier: {info.error}")
  return value
