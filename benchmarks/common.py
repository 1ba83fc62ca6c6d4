"""Pieces the benchmarks share: the random Qwen2 checkpoint both engines read, and memory readings."""

from __future__ import annotations

import os
import resource


def add_model_flags(p, *, hidden: int, intermediate: int, layers: int, heads: int) -> None:
  """Flags describing the random Qwen2 model a benchmark builds (defaults differ per benchmark)."""
  p.add_argument("--vocab", type=int, default=32000)
  p.add_argument("--hidden", type=int, default=hidden)
  p.add_argument("--intermediate", type=int, default=intermediate)
  p.add_argument("--layers", type=int, default=layers)
  p.add_argument("--heads", type=int, default=heads)
  p.add_argument("--kv_heads", type=int, default=2)
  p.add_argument("--tied", type=int, default=1)


def save_random_qwen2(args, path: str) -> int:
  """Writes a seeded random `transformers.Qwen2ForCausalLM` to `path`; returns its parameter count.

  The checkpoint is written by transformers so every engine in a benchmark reads identical weights.
  """
  import torch
  import transformers
  torch.manual_seed(0)
  hf_cfg = transformers.Qwen2Config(vocab_size=args.vocab, hidden_size=args.hidden,
                                    intermediate_size=args.intermediate, num_hidden_layers=args.layers,
                                    num_attention_heads=args.heads, num_key_value_heads=args.kv_heads,
                                    tie_word_embeddings=bool(args.tied), eos_token_id=1, bos_token_id=0)
  model = transformers.Qwen2ForCausalLM(hf_cfg)
  n_params = sum(p.numel() for p in model.parameters())
  model.save_pretrained(path)
  return n_params


def peak_rss_mib() -> float:
  """Peak resident memory of this process so far (Linux reports KiB)."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mib() -> float:
  with open("/proc/self/statm") as f:
    return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
