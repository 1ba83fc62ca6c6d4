"""Clear errors for bad checkpoints and tokenizers, and chat-template formatting."""

import json

import pytest

from hf_fixtures import make_hf_model, make_tokenizer
from prorl_jax import models


def test_missing_local_path_names_it(tmp_path):
  with pytest.raises(models.CheckpointError, match="does not exist"):
    models.load_hf(tmp_path / "nope")


def test_unreachable_hub_id_explains(monkeypatch):
  monkeypatch.setenv("HF_HUB_OFFLINE", "1")
  with pytest.raises(models.CheckpointError, match="Hugging Face Hub"):
    models.load_hf("nvidia/Nemotron-Research-Reasoning-Qwen-1.5B")


def test_directory_without_config(tmp_path):
  with pytest.raises(models.CheckpointError, match="no config.json"):
    models.load_hf(tmp_path)


def test_wrong_architecture(tmp_path):
  make_hf_model(tmp_path)
  cfg = json.loads((tmp_path / "config.json").read_text())
  cfg["model_type"] = "llama"
  (tmp_path / "config.json").write_text(json.dumps(cfg))
  with pytest.raises(models.ConfigError, match="model_type is 'llama'"):
    models.load_hf(tmp_path)


def test_sliding_window_refused(tmp_path):
  make_hf_model(tmp_path)
  cfg = json.loads((tmp_path / "config.json").read_text())
  cfg["use_sliding_window"] = True
  (tmp_path / "config.json").write_text(json.dumps(cfg))
  with pytest.raises(models.ConfigError, match="use_sliding_window"):
    models.load_hf(tmp_path)


def test_weights_that_do_not_match_config(tmp_path):
  make_hf_model(tmp_path, num_hidden_layers=2)
  cfg = json.loads((tmp_path / "config.json").read_text())
  cfg["num_hidden_layers"] = 3
  (tmp_path / "config.json").write_text(json.dumps(cfg))
  with pytest.raises(models.CheckpointError, match=r"missing \['model.layers.2"):
    models.load_hf(tmp_path)
  cfg["num_hidden_layers"] = 2
  cfg["intermediate_size"] = 100
  (tmp_path / "config.json").write_text(json.dumps(cfg))
  with pytest.raises(models.CheckpointError, match="gate_proj.weight has shape"):
    models.load_hf(tmp_path)


def test_torch_only_checkpoint_says_convert(tmp_path):
  make_hf_model(tmp_path)
  (tmp_path / "model.safetensors").unlink()
  (tmp_path / "pytorch_model.bin").write_bytes(b"")
  with pytest.raises(models.CheckpointError, match="convert them to safetensors"):
    models.load_hf(tmp_path)


def test_legacy_rope_theta_and_eos_list(tmp_path):
  make_hf_model(tmp_path, rope_theta=1234.0)
  cfg = json.loads((tmp_path / "config.json").read_text())
  cfg.pop("rope_parameters", None)
  cfg["rope_theta"] = 4321.0
  cfg["eos_token_id"] = [1, 5]
  (tmp_path / "config.json").write_text(json.dumps(cfg))
  config, _ = models.load_hf(tmp_path)
  assert config.rope_theta == 4321.0
  assert config.eos_token_ids == (1, 5)


def test_chat_template_formatting(tmp_path):
  make_tokenizer(tmp_path)
  tok = models.load_tokenizer(tmp_path)
  messages = [{"role": "user", "content": "What is 2 + 3?"}]
  ids = models.apply_chat_template(tok, messages)
  text = tok.decode(ids)
  assert text == "<|im_start|>user\nWhat is 2 + 3?<|im_end|>\n<|im_start|>assistant\n"
  without = models.apply_chat_template(tok, messages, add_generation_prompt=False)
  assert ids[:len(without)] == without and len(ids) > len(without)


def test_missing_chat_template_is_a_clear_error(tmp_path):
  make_tokenizer(tmp_path, chat_template=None)
  tok = models.load_tokenizer(tmp_path)
  with pytest.raises(models.ChatTemplateError, match="has no chat template"):
    models.apply_chat_template(tok, [{"role": "user", "content": "hi"}])
  # A template passed at load time fixes it.
  from hf_fixtures import CHATML_TEMPLATE
  tok = models.load_tokenizer(tmp_path, chat_template=CHATML_TEMPLATE)
  assert models.apply_chat_template(tok, [{"role": "user", "content": "hi"}])
