"""Command line: write the embedded dataset to a file, or validate a dataset before a long run.

  python -m prorl_jax.data embedded --size 5000 --split train --out data/train.parquet
  python -m prorl_jax.data check data/train.parquet [--column-map verl] [--domain math] [--tokenizer DIR
      --max-prompt-length 1024]

`check` loads every row (a malformed row stops it with the dataset, row and field named), prints the domain
counts and, with a tokenizer, the prompt-length distribution and how many prompts exceed the limit.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys

import numpy as np


def _parse(argv: list[str] | None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(prog="python -m prorl_jax.data", description=__doc__.split("\n")[0])
  sub = parser.add_subparsers(dest="command", required=True)
  emb = sub.add_parser("embedded", help="generate the embedded multi-domain dataset")
  emb.add_argument("--size", type=int, required=True)
  emb.add_argument("--seed", type=int, default=0)
  emb.add_argument("--split", default="train", choices=("train", "validation"))
  emb.add_argument("--domains", default="math,code,logic,stem,ifeval", help="comma-separated domain names")
  emb.add_argument("--out", required=True, help="a .jsonl or .parquet path")
  chk = sub.add_parser("check", help="load and validate a dataset, print statistics")
  chk.add_argument("source", help="file, directory or hub id")
  chk.add_argument("--split", default="train")
  chk.add_argument("--domain", default=None)
  chk.add_argument("--column-map", default=None, help="a name in prorl_jax.data.COLUMN_MAPS")
  chk.add_argument("--limit", type=int, default=None)
  chk.add_argument("--tokenizer", default=None, help="tokenizer directory (or 'byte' for the built-in one)")
  chk.add_argument("--max-prompt-length", type=int, default=None)
  return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
  """Runs the command; returns the exit status (0 ok, 1 invalid data)."""
  args = _parse(argv)
  from prorl_jax import data  # pylint: disable=g-import-not-at-top
  if args.command == "embedded":
    examples = data.embedded_dataset(args.size, seed=args.seed, split=args.split,
                                     domains=[d for d in args.domains.split(",") if d])
    path = data.save_examples(examples, args.out)
    print(json.dumps({"wrote": str(path), "examples": len(examples),
                      "domains": collections.Counter(e.domain for e in examples)}))
    return 0
  try:
    examples = data.load_examples(args.source, split=args.split, domain=args.domain, column_map=args.column_map,
                                  limit=args.limit)
  except data.DataError as e:
    print(f"DataError: {e}", file=sys.stderr)
    return 1
  report: dict = {"examples": len(examples), "domains": collections.Counter(e.domain for e in examples)}
  if args.tokenizer:
    if args.tokenizer == "byte":
      tokenizer = data.byte_chat_tokenizer()
    else:
      from transformers import AutoTokenizer  # pylint: disable=g-import-not-at-top
      tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    lengths = np.asarray([len(data.encode_prompt(tokenizer, e)) for e in examples])
    report["prompt_tokens"] = {q: int(np.percentile(lengths, p)) for q, p in
                               (("min", 0), ("p50", 50), ("p90", 90), ("p99", 99), ("max", 100))}
    if args.max_prompt_length:
      report["over_max_prompt_length"] = int((lengths > args.max_prompt_length).sum())
  print(json.dumps(report))
  return 0


if __name__ == "__main__":
  sys.exit(main())
