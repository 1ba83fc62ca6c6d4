"""Hugging Face checkpoints <-> params pytrees, without torch.

Reads `config.json` plus `model.safetensors` or a sharded `model-0000x-of-0000n.safetensors` set with its
`model.safetensors.index.json`, from a local directory or a hub id; writes the same layout back so that
`transformers.AutoModelForCausalLM.from_pretrained(out_dir)` loads it.
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any, Iterator

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

from prorl_jax.models.config import Qwen2Config

_INDEX = "model.safetensors.index.json"
_SINGLE = "model.safetensors"
# Buffers some exporters store next to the weights; they are recomputed from the config.
_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


class CheckpointError(FileNotFoundError):
  """A checkpoint path or file prorl_jax cannot read; the message names the path and what to do."""


def _np_dtype(dtype: Any) -> np.dtype:
  dtype = jnp.dtype(dtype)
  return np.dtype(ml_dtypes.bfloat16) if dtype == jnp.bfloat16 else np.dtype(dtype)


def param_layout(config: Qwen2Config) -> Iterator[tuple[str, tuple[str, ...], bool]]:
  """Yields (hf_name, params_path, transposed) for every tensor of the checkpoint `config` describes."""
  yield "model.embed_tokens.weight", ("embed_tokens", "embedding"), False
  for i in range(config.num_hidden_layers):
    hf, ours = f"model.layers.{i}", f"layers_{i}"
    for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
      yield f"{hf}.self_attn.{proj}.weight", (ours, "self_attn", proj, "kernel"), True
      if proj != "o_proj":
        yield f"{hf}.self_attn.{proj}.bias", (ours, "self_attn", proj, "bias"), False
    for proj in ("gate_proj", "up_proj", "down_proj"):
      yield f"{hf}.mlp.{proj}.weight", (ours, "mlp", proj, "kernel"), True
    for norm in ("input_layernorm", "post_attention_layernorm"):
      yield f"{hf}.{norm}.weight", (ours, norm, "weight"), False
  yield "model.norm.weight", ("norm", "weight"), False
  if not config.tie_word_embeddings:
    yield "lm_head.weight", ("lm_head", "kernel"), True


def _expected_shape(config: Qwen2Config, path: tuple[str, ...]) -> tuple[int, ...]:
  h, d, v = config.hidden_size, config.dims_per_head, config.vocab_size
  out_dims = {"q_proj": config.num_attention_heads * d, "k_proj": config.num_key_value_heads * d,
              "v_proj": config.num_key_value_heads * d, "o_proj": h, "gate_proj": config.intermediate_size,
              "up_proj": config.intermediate_size, "down_proj": h, "lm_head": v}
  in_dims = {"o_proj": config.num_attention_heads * d, "down_proj": config.intermediate_size}
  if path[-1] == "embedding":
    return (v, h)
  if path[-1] == "weight":  # RMSNorm scales.
    return (h,)
  name = path[-2]
  if path[-1] == "bias":
    return (out_dims[name],)
  return (in_dims.get(name, h), out_dims[name])


def resolve_checkpoint_dir(path_or_hub_id: str | os.PathLike, revision: str | None = None) -> pathlib.Path:
  """A local directory as is; otherwise downloads (or finds in the HF cache) a hub repo's config and weights."""
  path = pathlib.Path(os.path.expanduser(str(path_or_hub_id)))
  if path.is_dir():
    return path
  text = str(path_or_hub_id)
  if path.exists():
    raise CheckpointError(f"{text!r} is a file; pass the checkpoint directory that holds config.json")
  if text.startswith((".", "/", "~")) or text.count("/") != 1:
    raise CheckpointError(f"model path {text!r} does not exist (and is not a Hugging Face hub id "
                          "like 'nvidia/Nemotron-Research-Reasoning-Qwen-1.5B')")
  try:
    import huggingface_hub  # Only needed for hub ids.
    local = huggingface_hub.snapshot_download(
        repo_id=text, revision=revision,
        allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model", "*.jinja", "*.tiktoken"])
  except Exception as e:  # Offline, unknown repo, gated repo, ...: all end here with the reason.
    raise CheckpointError(
        f"could not load {text!r}: it is not a local directory, and fetching it from the Hugging Face Hub "
        f"failed ({type(e).__name__}: {e}). Download it where the hub is reachable (`huggingface-cli download "
        f"{text}`) and pass the local directory, or check the id and revision.") from e
  return pathlib.Path(local)


def read_hf_config(ckpt_dir: pathlib.Path, **runtime: Any) -> Qwen2Config:
  config_file = ckpt_dir / "config.json"
  if not config_file.is_file():
    raise CheckpointError(f"{ckpt_dir} has no config.json; is it a Hugging Face model directory?")
  with open(config_file) as f:
    return Qwen2Config.from_hf_dict(json.load(f), source=str(config_file), **runtime)


def _weight_files(ckpt_dir: pathlib.Path) -> dict[str, pathlib.Path]:
  """Maps every tensor name to the safetensors file holding it."""
  if (ckpt_dir / _INDEX).is_file():
    with open(ckpt_dir / _INDEX) as f:
      weight_map = json.load(f)["weight_map"]
    return {name: ckpt_dir / file for name, file in weight_map.items()}
  files = [ckpt_dir / _SINGLE] if (ckpt_dir / _SINGLE).is_file() else sorted(ckpt_dir.glob("*.safetensors"))
  if not files:
    bins = sorted(p.name for p in ckpt_dir.glob("*.bin"))
    hint = (f" It has torch pickles ({', '.join(bins)}); convert them to safetensors first "
            "(transformers: `model.save_pretrained(dir, safe_serialization=True)`).") if bins else ""
    raise CheckpointError(f"{ckpt_dir} has no .safetensors weights.{hint}")
  out = {}
  for file in files:
    with safe_open(file, "np") as f:
      out.update({name: file for name in f.keys()})
  return out


def load_hf(path: str | os.PathLike, dtype: Any = jnp.float32, *, revision: str | None = None,
            compute_dtype: Any = None, **runtime: Any) -> tuple[Qwen2Config, dict[str, Any]]:
  """Loads a Hugging Face Qwen2 checkpoint into (config, params).

  Args:
    path: a local checkpoint directory or a hub id (e.g. "nvidia/Nemotron-Research-Reasoning-Qwen-1.5B").
    dtype: the parameter dtype (e.g. jnp.float32 or jnp.bfloat16); the compute dtype is `config.dtype`.
    revision: hub revision (branch, tag or commit), e.g. "v2".
    compute_dtype: the activation/matmul dtype (`config.dtype`), float32 by default; logits stay float32.
    **runtime: other runtime config fields (`remat`, `attention_impl`).

  Returns:
    (Qwen2Config, params pytree of jax arrays in `dtype`).
  """
  ckpt_dir = resolve_checkpoint_dir(path, revision)
  if compute_dtype is not None:
    runtime["dtype"] = jnp.dtype(compute_dtype).name
  config = read_hf_config(ckpt_dir, **runtime)
  files = _weight_files(ckpt_dir)
  layout = list(param_layout(config))
  expected = {name for name, _, _ in layout}
  unexpected = [n for n in files if n not in expected and not n.endswith(_IGNORED_SUFFIXES)
                and not (config.tie_word_embeddings and n == "lm_head.weight")]
  missing = [n for n in expected if n not in files]
  if missing or unexpected:
    raise CheckpointError(f"{ckpt_dir}: the weights do not match its Qwen2 config.json: missing {missing[:5]}"
                          f"{' ...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}"
                          f"{' ...' if len(unexpected) > 5 else ''}")
  target = _np_dtype(dtype)
  params: dict[str, Any] = {}
  by_file: dict[pathlib.Path, list] = {}
  for entry in layout:
    by_file.setdefault(files[entry[0]], []).append(entry)
  for file, entries in by_file.items():
    with safe_open(file, "np") as f:
      for name, path_, transposed in entries:
        array = f.get_tensor(name)
        if transposed:
          array = array.T
        want = _expected_shape(config, path_)
        if array.shape != want:
          raise CheckpointError(f"{file.name}: tensor {name} has shape {array.shape} (after transposing: "
                                f"{transposed}), but config.json implies {want}")
        node = params
        for key in path_[:-1]:
          node = node.setdefault(key, {})
        node[path_[-1]] = jnp.asarray(array.astype(target))
  return config, params


def save_hf(config: Qwen2Config, params: dict[str, Any], out_dir: str | os.PathLike, *,
            max_shard_bytes: int = 5 * 1024**3, tokenizer: Any = None) -> pathlib.Path:
  """Writes params as a Hugging Face checkpoint directory (config.json + safetensors, sharded above the limit).

  The tensors keep the params' dtype. If `tokenizer` is given, it is saved alongside (`save_pretrained`).
  """
  out = pathlib.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  tensors, dtypes = {}, set()
  for name, path_, transposed in param_layout(config):
    node = params
    for key in path_:
      if key not in node:
        raise KeyError(f"params has no entry {'/'.join(path_)} (needed for {name}); is it a Qwen2 params tree "
                       "for this config?")
      node = node[key]
    array = np.asarray(jax.device_get(node))
    dtypes.add(array.dtype)
    tensors[name] = np.ascontiguousarray(array.T if transposed else array)
  shards: list[dict[str, np.ndarray]] = [{}]
  size = 0
  for name, array in tensors.items():
    if shards[-1] and size + array.nbytes > max_shard_bytes:
      shards.append({})
      size = 0
    shards[-1][name] = array
    size += array.nbytes
  for stale in list(out.glob("model*.safetensors")) + [out / _INDEX]:
    stale.unlink(missing_ok=True)
  if len(shards) == 1:
    save_file(shards[0], str(out / _SINGLE), metadata={"format": "pt"})
  else:
    weight_map = {}
    for i, shard in enumerate(shards):
      file = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
      save_file(shard, str(out / file), metadata={"format": "pt"})
      weight_map.update({name: file for name in shard})
    with open(out / _INDEX, "w") as f:
      json.dump({"metadata": {"total_size": sum(a.nbytes for a in tensors.values())}, "weight_map": weight_map},
                f, indent=2)
  torch_dtype = {np.dtype(np.float32): "float32", np.dtype(ml_dtypes.bfloat16): "bfloat16",
                 np.dtype(np.float16): "float16"}.get(next(iter(dtypes)) if len(dtypes) == 1 else None, "float32")
  with open(out / "config.json", "w") as f:
    json.dump(config.to_hf_dict(torch_dtype), f, indent=2)
  if tokenizer is not None:
    tokenizer.save_pretrained(str(out))
  return out
