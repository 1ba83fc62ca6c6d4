"""The ProRLv2 algorithm core: advantages, policy loss, aggregation, KL, log-probs, dynamic sampling, length
shaping, reference reset and pass@k. Pure, jit-able functions (host-side helpers are marked as such), checked
against independent numpy references and against verl 0.9.1 (`benchmarks/verl_parity.py`).

This package imports nothing else from prorl_jax.
"""

from prorl_jax.algorithms.advantages import compute_advantages
from prorl_jax.algorithms.advantages import discounted_returns
from prorl_jax.algorithms.advantages import ESTIMATORS as ADVANTAGE_ESTIMATORS
from prorl_jax.algorithms.advantages import grpo_advantages
from prorl_jax.algorithms.advantages import outcome_to_token_rewards
from prorl_jax.algorithms.advantages import reinforce_pp_advantages
from prorl_jax.algorithms.advantages import reinforce_pp_baseline_advantages
from prorl_jax.algorithms.advantages import rloo_advantages
from prorl_jax.algorithms.aggregation import AGG_MODES
from prorl_jax.algorithms.aggregation import agg_loss
from prorl_jax.algorithms.aggregation import global_counts
from prorl_jax.algorithms.dynamic_sampling import FILTER_METRICS, KEEP_RULES, dynamic_sampling_keep
from prorl_jax.algorithms.dynamic_sampling import DynamicSamplingAccumulator
from prorl_jax.algorithms.dynamic_sampling import DynamicSamplingError
from prorl_jax.algorithms.kl import ESTIMATORS as KL_ESTIMATORS
from prorl_jax.algorithms.kl import NAMES as KL_NAMES
from prorl_jax.algorithms.kl import KL_CONVENTIONS
from prorl_jax.algorithms.kl import kl_in_reward
from prorl_jax.algorithms.kl import kl_penalty
from prorl_jax.algorithms.length_shaping import cosine_length_penalty
from prorl_jax.algorithms.length_shaping import length_penalty_active
from prorl_jax.algorithms.length_shaping import LengthShapingConfig
from prorl_jax.algorithms.length_shaping import overlong_penalty
from prorl_jax.algorithms.length_shaping import shape_rewards
from prorl_jax.algorithms.length_shaping import stop_properly_shaping
from prorl_jax.algorithms.logprobs import token_logprobs_from_hidden
from prorl_jax.algorithms.logprobs import token_logprobs_from_logits
from prorl_jax.algorithms.masked import masked_mean
from prorl_jax.algorithms.masked import masked_sum
from prorl_jax.algorithms.masked import masked_var
from prorl_jax.algorithms.masked import masked_whiten
from prorl_jax.algorithms.pass_at_k import mean_pass_at_k
from prorl_jax.algorithms.pass_at_k import pass_at_k
from prorl_jax.algorithms.policy_loss import policy_loss
from prorl_jax.algorithms.reference_reset import reset_decision
from prorl_jax.algorithms.reference_reset import reset_reference
from prorl_jax.algorithms.reference_reset import ResetPolicy
from prorl_jax.algorithms.reference_reset import ResetTrackerState

__all__ = [
    "ADVANTAGE_ESTIMATORS", "AGG_MODES", "DynamicSamplingAccumulator", "DynamicSamplingError", "FILTER_METRICS",
    "KEEP_RULES", "KL_CONVENTIONS", "KL_ESTIMATORS", "KL_NAMES", "LengthShapingConfig", "ResetPolicy",
    "ResetTrackerState", "agg_loss", "compute_advantages", "cosine_length_penalty", "discounted_returns",
    "dynamic_sampling_keep", "global_counts", "grpo_advantages", "kl_in_reward", "kl_penalty",
    "length_penalty_active", "masked_mean", "masked_sum", "masked_var", "masked_whiten", "mean_pass_at_k",
    "outcome_to_token_rewards", "overlong_penalty", "pass_at_k", "policy_loss", "reinforce_pp_advantages",
    "reinforce_pp_baseline_advantages", "reset_decision", "reset_reference", "rloo_advantages", "shape_rewards",
    "stop_properly_shaping", "token_logprobs_from_hidden", "token_logprobs_from_logits",
]
