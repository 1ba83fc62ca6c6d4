"""Evaluation as ProRL reports it: k samples per problem, score@1 (the mean score: ProRL's headline "pass@1") and
unbiased pass@k of fully correct samples (k = 1 included; `summary`).

The same code runs inside training (validation) and in `experiments.evaluate` (through
`prorl_jax.training.evaluate`, which loads the trainer's checkpoints); this package knows no trainer.
"""

from prorl_jax.evaluation.checkpoint_eval import (CheckpointReport, benchmark_of, evaluate_checkpoint,
                                                  problems_from_examples)
from prorl_jax.evaluation.plots import pass_at_k_figure, plot_pass_at_k
from prorl_jax.evaluation.results import ResultsFile, ResultsMismatchError, eval_fingerprint
from prorl_jax.evaluation.runner import EvalSettings, ProblemResult, evaluate_problems
from prorl_jax.evaluation.summary import SOLVED_THRESHOLD, format_table, ks_up_to, summarize, summarize_group

__all__ = [
    "CheckpointReport", "EvalSettings", "ProblemResult", "ResultsFile", "ResultsMismatchError", "SOLVED_THRESHOLD",
    "benchmark_of", "eval_fingerprint", "evaluate_checkpoint", "evaluate_problems", "format_table", "ks_up_to",
    "pass_at_k_figure", "plot_pass_at_k", "problems_from_examples", "summarize", "summarize_group",
]
