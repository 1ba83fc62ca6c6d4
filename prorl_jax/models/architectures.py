"""A model's architecture without its weights: `config.json` from a local directory, the HF cache, a table of the
checkpoints ProRL uses shipped with the package, or (when the hub is reachable) the hub's `config.json` alone.

Planning a run (`prorl_jax.planning`) needs only the shapes, so it never downloads weights.
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any

from prorl_jax.models.config import Qwen2Config
from prorl_jax.models.hf_io import CheckpointError, read_hf_config

_QWEN2_1P5B = {
    "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "vocab_size": 151936, "hidden_size": 1536,
    "intermediate_size": 8960, "num_hidden_layers": 28, "num_attention_heads": 12, "num_key_value_heads": 2,
    "hidden_act": "silu", "max_position_embeddings": 131072, "rms_norm_eps": 1e-06, "rope_theta": 10000,
    "tie_word_embeddings": False, "use_sliding_window": False, "bos_token_id": 151643, "eos_token_id": 151643,
    "initializer_range": 0.02, "torch_dtype": "bfloat16",
}

# The architecture fields of these repositories' config.json (ALGORITHMS.md §1: ProRL trains the 1.5B; the 7B is the
# next size of the same distilled family). Nemotron-Research-Reasoning-Qwen-1.5B is DeepSeek-R1-Distill-Qwen-1.5B
# trained further, with the same architecture.
KNOWN_ARCHITECTURES: dict[str, dict[str, Any]] = {
    "nvidia/Nemotron-Research-Reasoning-Qwen-1.5B": _QWEN2_1P5B,
    "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B": _QWEN2_1P5B,
    "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B": dict(
        _QWEN2_1P5B, vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_attention_heads=28,
        num_key_value_heads=4),
}


def _known(hub_id: str) -> dict[str, Any] | None:
  return next((v for k, v in KNOWN_ARCHITECTURES.items() if k.lower() == hub_id.lower()), None)


def load_architecture(path_or_hub_id: str | os.PathLike, revision: str | None = None,
                      **runtime: Any) -> tuple[Qwen2Config, str]:
  """(config, where it came from) for a local checkpoint directory or a hub id, reading no weights.

  A hub id is looked up in the Hugging Face cache, then in `KNOWN_ARCHITECTURES`, then (unless HF_HUB_OFFLINE is
  set) fetched as `config.json` alone. Raises CheckpointError naming the fix (a local directory with config.json)
  when none of these has it. `runtime` fields (dtype, remat, attention_impl) are passed to `Qwen2Config`.
  """
  text = os.path.expanduser(str(path_or_hub_id))
  path = pathlib.Path(text)
  if path.is_dir():
    return read_hf_config(path, **runtime), str(path / "config.json")
  if path.exists() or text.startswith((".", "/", "~")) or text.count("/") != 1:
    raise CheckpointError(f"model path {str(path_or_hub_id)!r} is not a checkpoint directory (and not a Hugging Face "
                          "hub id like 'nvidia/Nemotron-Research-Reasoning-Qwen-1.5B'); pass a directory that holds "
                          "config.json")
  import huggingface_hub  # Only needed for hub ids.
  from huggingface_hub import constants
  cached = huggingface_hub.try_to_load_from_cache(text, "config.json", revision=revision)
  if isinstance(cached, str):
    return read_hf_config(pathlib.Path(cached).parent, **runtime), f"{text} (Hugging Face cache)"
  known = _known(text)
  if known is not None:
    return Qwen2Config.from_hf_dict(known, source=f"{text} (built-in table)", **runtime), f"{text} (built-in table)"
  reason = "HF_HUB_OFFLINE is set"
  if not constants.HF_HUB_OFFLINE:
    try:
      file = huggingface_hub.hf_hub_download(text, "config.json", revision=revision)
      with open(file) as f:
        return Qwen2Config.from_hf_dict(json.load(f), source=f"{text}/config.json", **runtime), f"{text} (hub)"
    except Exception as e:  # offline, unknown or gated repo: all end in the error below
      reason = f"fetching its config.json failed ({type(e).__name__}: {str(e).splitlines()[0]})"
  known_ids = ", ".join(KNOWN_ARCHITECTURES)
  raise CheckpointError(f"the architecture of {text!r} is unknown: it is not in the Hugging Face cache, not one of "
                        f"the built-in architectures ({known_ids}), and {reason}. Pass a local directory holding "
                        f"its config.json (e.g. `huggingface-cli download {text} config.json --local-dir DIR`, "
                        "then --config.model.path=DIR)")
