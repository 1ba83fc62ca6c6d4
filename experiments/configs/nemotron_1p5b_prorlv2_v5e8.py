"""`nemotron_1p5b_prorlv2.py` fitted to a v5e-8 slice (8 chips, 15.75 GiB usable HBM each).

`python -m experiments.plan --topology=v5e-8` on the base config: the update of a 16-sequence micro-batch needs
25.5 GiB of temporaries per chip; even one sequence per chip holds 12 heads of 9,216 x 9,216 attention scores.
Splitting the heads over two chips (tensor parallel) with one sequence per pair of chips (micro-batch 4 over
fsdp 4) compiles to a 9.75 GiB peak. Everything else is the base recipe (README, "Planning a run").
"""

from experiments.configs import nemotron_1p5b_prorlv2


def get_config():
  c = nemotron_1p5b_prorlv2.get_config()
  c.mesh.tensor = 2
  c.batch.micro_batch_size = 4
  return c
