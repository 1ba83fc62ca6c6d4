"""scripts/make_tiny_checkpoint.py for the chain suite, shrunk to seconds: it writes a loadable checkpoint and
reports validation accuracy per chain level, held-out levels included."""

import json
import subprocess
import sys

from prorl_jax import models
from training_helpers import REPO


def test_chain_warm_start_writes_a_checkpoint_and_per_level_accuracy(tmp_path):
  out = tmp_path / "chain_base"
  proc = subprocess.run(
      [sys.executable, "scripts/make_tiny_checkpoint.py", "--suite=chain", "--levels=1-2", "--eval_levels=1-4",
       f"--out={out}", "--steps=24", "--eval_every=12", "--train_size=60", "--val_size=8", "--batch=8",
       "--hidden=32", "--vocab=128", "--max_new_tokens=40", "--target=2"],
      cwd=REPO, capture_output=True, text=True, timeout=600, env={"PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu",
                                                                 "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"})
  assert proc.returncode == 0, proc.stderr[-3000:]
  recipe = json.loads((out / "warm_start.json").read_text())
  assert recipe["sft_steps"] == 24 and [h["step"] for h in recipe["history"]] == [12, 24]
  assert set(recipe["history"][-1]["per_domain"]) == {"chain/L1", "chain/L2"}  # the dev set: training levels
  assert set(recipe["validation_per_domain"]) == {"chain/L1", "chain/L2", "chain/L3", "chain/L4"}
  config, params = models.load_hf(out)
  assert config.hidden_size == 32 and config.num_params() == recipe["num_params"]
  tokenizer = models.load_tokenizer(out)
  assert tokenizer.decode(tokenizer.encode("12 + 9 = 21\n\\boxed{21}")) == "12 + 9 = 21\n\\boxed{21}"
