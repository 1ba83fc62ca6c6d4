"""`nemotron_1p5b_prorlv2.py` fitted to a v6e-8 slice (8 Trillium chips, 31.25 GiB usable HBM each).

`python -m experiments.plan --topology=v6e-8` on the base config: the update of a 16-sequence micro-batch needs
41.5 GiB of temporaries per chip (dense attention over 9,216 tokens, two sequences per chip); one sequence per chip
(micro-batch 8) compiles to a 29.5 GiB peak. Everything else is the base recipe (README, "Planning a run").
"""

from experiments.configs import nemotron_1p5b_prorlv2


def get_config():
  c = nemotron_1p5b_prorlv2.get_config()
  c.batch.micro_batch_size = 8
  return c
