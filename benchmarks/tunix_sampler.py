"""google-tunix's vanilla sampler on the rollout benchmark's checkpoint; runs only in a venv with google-tunix.

`benchmarks/rollout.py --tunix_python=/path/to/tunixvenv/bin/python` writes a random Qwen2 Hugging Face checkpoint
and runs

  /path/to/tunixvenv/bin/python benchmarks/tunix_sampler.py CKPT_DIR '<json of rollout.py's args>'

This loads the checkpoint into `tunix.models.qwen2` (its safetensors loader), builds the benchmark's prompts
(`RandomState(0)` ids in [3, vocab)), generates `new_tokens` tokens per row greedily with
`tunix.generate.sampler.Sampler` (KV cache of prompt + new_tokens, no EOS stop), times `repeats` calls after one
warm-up/compile call, and prints one JSON line: tokens_per_s, seconds (best call), first_call_s and tokens
(the new token ids per row). It does not import prorl_jax.
"""

import json
import sys
import time

import numpy as np
from tunix.generate import sampler as sampler_lib
from tunix.models.qwen2 import model as qwen2_model
from tunix.models.qwen2 import params as qwen2_params


class _IdTokenizer:
  """Tunix's Sampler takes text prompts; this maps a prompt "5 17 42" to the ids [5, 17, 42] and back.

  pad -1 never occurs in a prompt or among generated ids, so no prompt position is masked as padding; no BOS.
  """

  def encode(self, text, **_):
    return [int(t) for t in text.split()]

  def decode(self, ids, **_):
    return " ".join(map(str, ids))

  def bos_id(self):
    return None

  def eos_id(self):
    return -1

  def pad_id(self):
    return -1


def main(ckpt: str, args: dict) -> dict:
  with open(f"{ckpt}/config.json") as f:
    hf = json.load(f)
  rope_theta = hf.get("rope_theta") or hf.get("rope_parameters", {}).get("rope_theta", 10000.0)
  head_dim = hf.get("head_dim") or hf["hidden_size"] // hf["num_attention_heads"]
  config = qwen2_model.ModelConfig(
      num_layers=hf["num_hidden_layers"], vocab_size=hf["vocab_size"], embed_dim=hf["hidden_size"],
      hidden_dim=hf["intermediate_size"], num_heads=hf["num_attention_heads"], head_dim=head_dim,
      num_kv_heads=hf["num_key_value_heads"], rope_theta=rope_theta, norm_eps=hf["rms_norm_eps"],
      use_tied_embedding=hf.get("tie_word_embeddings", False))
  model = qwen2_params.create_model_from_safe_tensors(ckpt, config)

  batch, prompt_len, new_tokens = args["batch"], args["prompt"], args["new_tokens"]
  prompts = np.random.RandomState(0).randint(3, args["vocab"], size=(batch, prompt_len))
  texts = [" ".join(map(str, row)) for row in prompts]
  cache = sampler_lib.CacheConfig(cache_size=prompt_len + new_tokens, num_layers=config.num_layers,
                                  num_kv_heads=config.num_kv_heads, head_dim=config.head_dim)
  sampler = sampler_lib.Sampler(model, _IdTokenizer(), cache)
  # eos -1 can never be sampled, so every row runs exactly new_tokens steps; no top_p/beam_size means greedy.
  kw = dict(max_generation_steps=new_tokens, max_prompt_length=prompt_len, eos_tokens=[-1], temperature=0.0)

  t = time.perf_counter()
  sampler(texts, **kw)
  first = time.perf_counter() - t
  times = []
  for _ in range(args["repeats"]):
    t = time.perf_counter()
    out = sampler(texts, **kw)
    times.append(time.perf_counter() - t)
  tokens = [np.asarray(row).tolist() for row in out.tokens]
  assert all(len(row) == new_tokens for row in tokens), [len(row) for row in tokens]
  best = min(times)
  return {"tokens_per_s": round(batch * new_tokens / best, 3), "seconds": round(best, 3),
          "first_call_s": round(first, 3), "tokens": tokens}


if __name__ == "__main__":
  print(json.dumps(main(sys.argv[1], json.loads(sys.argv[2]))))
