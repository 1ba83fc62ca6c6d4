"""Clear errors, not tracebacks from inside jit, for the mistakes users make."""

import json
import shutil

import pytest

from prorl_jax import models
from prorl_jax.data import DataError
from prorl_jax.training import Trainer, TrainingError, train, validate
from prorl_jax.training.config import check_known_fields, default_config
from training_helpers import small_config


def test_missing_model_path(tmp_path):
  with pytest.raises(models.CheckpointError, match="does not exist"):
    Trainer(small_config(**{"model.path": str(tmp_path / "no_model")}), tmp_path / "w")


def test_tokenizer_without_chat_template(tmp_path):
  model_dir = tmp_path / "model"
  shutil.copytree(small_config().model.path, model_dir)
  cfg_file = model_dir / "tokenizer_config.json"
  cfg = json.loads(cfg_file.read_text())
  cfg.pop("chat_template", None)
  cfg_file.write_text(json.dumps(cfg))
  (model_dir / "chat_template.jinja").unlink(missing_ok=True)
  with pytest.raises(models.ChatTemplateError, match="no chat template"):
    Trainer(small_config(**{"model.path": str(model_dir)}), tmp_path / "w")


@pytest.mark.parametrize("overrides,match", [
    ({"batch.prompts": 3, "batch.mini_batch_prompts": 3}, "batch.prompts = 3 must be a multiple of the 2 processes"),
    ({}, "each process must own its own rows")])
def test_multi_process_requirements_are_named(tmp_path, monkeypatch, overrides, match):
  # Seen from one of two processes: this test's single process holds every row, as tensor-only meshes would.
  monkeypatch.setattr("jax.process_count", lambda: 2)
  with pytest.raises(TrainingError, match=match):
    Trainer(small_config(**overrides), tmp_path / "w")


def test_empty_dataset(tmp_path):
  (tmp_path / "empty.jsonl").write_text("")
  with pytest.raises(DataError, match="data.train"):
    Trainer(small_config(**{"data.train": str(tmp_path / "empty.jsonl")}), tmp_path / "w")


def test_batch_that_cannot_be_filled(tmp_path):
  # Every answer is unreachable, so every group has zero reward variance and dynamic sampling keeps nothing.
  rows = [{"id": f"q{i}", "domain": "math", "prompt": f"What is {i} + {i}?", "ground_truth": "\\pi^{77}"}
          for i in range(40)]
  (tmp_path / "hard.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
  config = small_config(**{"data.train": str(tmp_path / "hard.jsonl"), "dynamic_sampling.max_gen_batches": 2,
                           "eval.at_start": False, "data.validation": ""})
  with pytest.raises(TrainingError, match="max_gen_batches"):
    train(config, tmp_path / "w", show_progress=False)
  assert (tmp_path / "w" / "checkpoints" / "0").is_dir()  # the state before the failed step is saved


def test_schema_rejects_unknown_fields():
  config = default_config()
  config.unlock()
  config.rollout.tempreature = 1.0
  with pytest.raises(models.ConfigError, match="rollout.tempreature"):
    check_known_fields(config)


@pytest.mark.parametrize("field,value,match", [
    ("batch.mini_batch_prompts", 3, "must divide batch.prompts"),
    ("algorithm.advantage", "ppo", "algorithm.advantage"),
    ("algorithm.loss_agg", "mean", "algorithm.loss_agg"),
    ("rollout.temperature", 0.0, "rollout.temperature"),
    ("model.compute_dtype", "float8", "model.compute_dtype"),
    ("algorithm.clip_c", 0.5, "clip_c"),
    ("total_steps", 0, "total_steps"),
])
def test_invalid_values_name_the_field(field, value, match):
  with pytest.raises(models.ConfigError, match=match):
    validate(small_config(**{field: value}))
