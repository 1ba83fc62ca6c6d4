"""Tests for prorl_jax.data.pipeline: shuffling, repeat, sharding, over-long prompts, checkpointable state."""

import json

import numpy as np
import pytest

from prorl_jax.data import (DataError, Example, PipelineConfig, PromptPipeline, build_messages, byte_chat_tokenizer,
                            pad_prompts)


@pytest.fixture(scope="module")
def tok():
  return byte_chat_tokenizer()


def _examples(n, *, spread=17):
  return [Example(id=f"q{i}", domain="math", prompt="word " * (i % spread + 1) + str(i), ground_truth=str(i))
          for i in range(n)]


def _reference_length(ex):
  """Token count of a ChatML prompt under the byte tokenizer, from first principles (no chat template)."""
  content = build_messages(ex)[-1]["content"]
  # <|im_start|> "user\n" content <|im_end|> "\n" <|im_start|> "assistant\n"
  return 1 + len(f"user\n{content}".encode()) + 1 + 1 + 1 + len(b"assistant\n")


def _ids(batches):
  return [[e.id for e in b.examples] for b in batches]


def _take(pipeline, n):
  return [next(pipeline) for _ in range(n)]


def _same_batches(a, b):
  assert _ids(a) == _ids(b)
  for x, y in zip(a, b):
    assert all(np.array_equal(p, q) for p, q in zip(x.prompt_ids, y.prompt_ids))
    np.testing.assert_array_equal(x.epochs, y.epochs)
    np.testing.assert_array_equal(x.truncated, y.truncated)


@pytest.mark.parametrize("num_threads", [0, 2])
@pytest.mark.parametrize("overlong", ["filter", "truncate_left"])
def test_state_restores_exact_position(tok, num_threads, overlong):
  examples = _examples(53)
  cfg = PipelineConfig(batch_size=4, seed=7, max_prompt_length=140, overlong=overlong, num_threads=num_threads)
  first = PromptPipeline(examples, tok, cfg, process_index=0, process_count=1)
  _take(first, 9)
  state = json.loads(json.dumps(first.get_state()))  # Must survive JSON (it goes into the checkpoint).
  assert len(json.dumps(state)) < 1500
  stats_at_save = dict(first.stats)
  expected = _take(first, 14)  # Crosses into the next epoch (53 prompts, <= 13 batches each).
  assert expected[-1].epochs.max() >= 1
  fresh = PromptPipeline(examples, tok, cfg, process_index=0, process_count=1)
  fresh.set_state(state)
  assert fresh.stats == stats_at_save
  _same_batches(_take(fresh, 14), expected)
  assert fresh.stats == first.stats


def test_epochs_are_reshuffled_permutations(tok):
  examples = _examples(24)
  cfg = PipelineConfig(batch_size=6, seed=3)
  epochs = [sum(_ids(_take(p, 4)), []) for p in [PromptPipeline(examples, tok, cfg, process_index=0,
                                                                process_count=1)] for _ in range(3)]
  ids = sorted(e.id for e in examples)
  assert all(sorted(e) == ids for e in epochs)
  assert len({tuple(e) for e in epochs}) == 3 and epochs[0] != ids
  again = PromptPipeline(examples, tok, cfg, process_index=0, process_count=1)
  assert sum(_ids(_take(again, 4)), []) == epochs[0]
  other = PromptPipeline(examples, tok, PipelineConfig(batch_size=6, seed=4), process_index=0, process_count=1)
  assert sum(_ids(_take(other, 4)), []) != epochs[0]


def test_processes_get_disjoint_shards_covering_each_epoch(tok):
  examples = _examples(50)  # 50 = 4 * 12 + 2: two prompts per epoch are left out to keep shards even.
  cfg = PipelineConfig(batch_size=8, seed=1)
  pipes = [PromptPipeline(examples, tok, cfg, process_index=i, process_count=4) for i in range(4)]
  left_out = []
  for _ in range(3):  # 12 prompts per process per epoch = 6 batches of 2.
    per_process = [sum(_ids(_take(p, 6)), []) for p in pipes]
    assert all(len(ids) == 12 for ids in per_process)
    union = set().union(*per_process)
    assert len(union) == 48  # Disjoint.
    left_out.append(frozenset({e.id for e in examples} - union))
  assert len(set(left_out)) > 1  # Different prompts are left out in different epochs.
  assert all(len(b) == 2 for b in _take(pipes[0], 3))


def test_evaluation_is_one_ordered_pass(tok):
  examples = _examples(21)
  pipe = PromptPipeline(examples, tok, PipelineConfig.for_evaluation(8), process_index=0, process_count=1)
  batches = list(pipe)
  assert [len(b) for b in batches] == [8, 8, 5]
  assert sum(_ids(batches), []) == [e.id for e in examples]
  shards = [sum(_ids(PromptPipeline(examples, tok, PipelineConfig.for_evaluation(4), process_index=i,
                                    process_count=2)), []) for i in range(2)]
  assert sorted(shards[0] + shards[1]) == sorted(e.id for e in examples) and not set(shards[0]) & set(shards[1])


def test_overlong_prompts_are_filtered_and_counted(tok):
  examples = _examples(40)
  lengths = {e.id: _reference_length(e) for e in examples}
  max_len = int(np.median(list(lengths.values())))
  pipe = PromptPipeline(examples, tok, PipelineConfig.for_evaluation(5, max_prompt_length=max_len),
                        process_index=0, process_count=1)
  batches = list(pipe)
  kept = sum(_ids(batches), [])
  assert kept == [e.id for e in examples if lengths[e.id] <= max_len]
  assert pipe.stats == {"filtered": 40 - len(kept), "truncated": 0, "delivered": len(kept)}
  for b in batches:
    assert [len(p) for p in b.prompt_ids] == [lengths[e.id] for e in b.examples]
    np.testing.assert_array_equal(b.prompt_lengths, [lengths[e.id] for e in b.examples])


@pytest.mark.parametrize("mode", ["truncate_left", "truncate_middle"])
def test_truncation_keeps_the_right_tokens(tok, mode):
  examples = _examples(12)
  max_len = 40
  full = {b.examples[0].id: b.prompt_ids[0] for b in PromptPipeline(
      examples, tok, PipelineConfig.for_evaluation(1), process_index=0, process_count=1)}
  pipe = PromptPipeline(examples, tok, PipelineConfig.for_evaluation(1, max_prompt_length=max_len, overlong=mode),
                        process_index=0, process_count=1)
  n_truncated = 0
  for b in pipe:
    ids, ref = b.prompt_ids[0], full[b.examples[0].id]
    assert b.truncated[0] == (len(ref) > max_len)
    if len(ref) <= max_len:
      np.testing.assert_array_equal(ids, ref)
      continue
    n_truncated += 1
    expected = ref[-max_len:] if mode == "truncate_left" else np.concatenate([ref[:20], ref[-20:]])
    np.testing.assert_array_equal(ids, expected)
    assert tok.decode(ids).endswith("<|im_start|>assistant\n")
  assert n_truncated > 0 and pipe.stats["truncated"] == n_truncated


def test_overlong_error_and_all_filtered(tok):
  examples = _examples(6)
  pipe = PromptPipeline(examples, tok, PipelineConfig(batch_size=2, max_prompt_length=10, overlong="error"),
                        process_index=0, process_count=1)
  with pytest.raises(DataError, match=r"example 'q\d+': field 'prompt' has \d+ tokens, more than max_prompt_length"):
    next(pipe)
  pipe = PromptPipeline(examples, tok, PipelineConfig(batch_size=2, max_prompt_length=10),
                        process_index=0, process_count=1)
  with pytest.raises(DataError, match="max_prompt_length.*shorter than every prompt"):
    next(pipe)


def test_state_mismatch_is_refused(tok):
  examples = _examples(10)
  cfg = PipelineConfig(batch_size=2, seed=0)
  state = PromptPipeline(examples, tok, cfg, process_index=0, process_count=1).get_state()
  with pytest.raises(ValueError, match=r"seed: saved 0 vs now 1"):
    PromptPipeline(examples, tok, PipelineConfig(batch_size=2, seed=1), process_index=0,
                   process_count=1).set_state(state)
  with pytest.raises(ValueError, match=r"ids_sha1"):
    PromptPipeline(examples[::-1], tok, cfg, process_index=0, process_count=1).set_state(state)
  PromptPipeline(examples[::-1], tok, cfg, process_index=0, process_count=1).set_state(state, strict=False)
  with pytest.raises(ValueError, match="not a PromptPipeline state"):
    PromptPipeline(examples, tok, cfg, process_index=0, process_count=1).set_state({"next_index": 3})


def test_config_and_argument_errors(tok):
  with pytest.raises(ValueError, match="batch_size=6 is not divisible by process_count=4"):
    PromptPipeline(_examples(8), tok, PipelineConfig(batch_size=6), process_index=0, process_count=4)
  with pytest.raises(ValueError, match="overlong must be one of"):
    PipelineConfig(batch_size=2, overlong="drop")
  with pytest.raises(ValueError, match=r"seed must be in \[0, 2\*\*32\)"):
    PipelineConfig(batch_size=2, seed=-1)
  with pytest.raises(ValueError, match=r"process_index=2 must be in \[0, process_count=2\)"):
    PromptPipeline(_examples(8), tok, PipelineConfig(batch_size=2), process_index=2, process_count=2)
  with pytest.raises(TypeError, match=r"examples\[0\] is a dict"):
    PromptPipeline([{"id": "x"}], tok, PipelineConfig(batch_size=2), process_index=0, process_count=1)


def test_defaults_to_jax_process(tok):
  pipe = PromptPipeline(_examples(4), tok, PipelineConfig(batch_size=2))
  assert (pipe.process_index, pipe.process_count, pipe.local_batch_size) == (0, 1, 2)
  assert len(next(pipe)) == 2


def _pad_reference(seqs, pad, length, side):
  out = np.full((len(seqs), length), pad)
  for i, s in enumerate(seqs):
    row = list(s) + [pad] * (length - len(s)) if side == "right" else [pad] * (length - len(s)) + list(s)
    out[i] = row
  return out


@pytest.mark.parametrize("side", ["left", "right"])
def test_pad_prompts_matches_reference(side):
  seqs = [[5, 6, 7], [1], [], [9, 9, 9, 9, 9]]
  tokens, mask = pad_prompts(seqs, -1, side=side, multiple_of=4)
  assert tokens.shape == (4, 8) and tokens.dtype == np.int32
  np.testing.assert_array_equal(tokens, _pad_reference(seqs, -1, 8, side))
  np.testing.assert_array_equal(mask, _pad_reference(seqs, -1, 8, side) != -1)
  tokens, _ = pad_prompts(seqs, 0, length=5, side=side)
  assert tokens.shape == (4, 5)
  with pytest.raises(ValueError, match="more than length=4"):
    pad_prompts(seqs, 0, length=4)


def test_batch_padded_puts_prompts_at_the_right_edge(tok):
  batch = next(PromptPipeline(_examples(8), tok, PipelineConfig(batch_size=4), process_index=0, process_count=1))
  tokens, mask = batch.padded(tok.pad_token_id)
  assert mask[:, -1].all() and (mask.sum(1) == batch.prompt_lengths).all()
  for row, ids in zip(tokens, batch.prompt_ids):
    np.testing.assert_array_equal(row[-len(ids):], ids)


def test_state_round_trips_through_an_orbax_checkpoint(tok, tmp_path):
  ocp = pytest.importorskip("orbax.checkpoint")
  examples = _examples(30)
  cfg = PipelineConfig(batch_size=4, seed=5, max_prompt_length=140)
  pipe = PromptPipeline(examples, tok, cfg, process_index=0, process_count=1)
  _take(pipe, 5)
  with ocp.CheckpointManager(tmp_path / "ckpt") as manager:
    manager.save(5, args=ocp.args.Composite(data=ocp.args.JsonSave(pipe.get_state())))
    manager.wait_until_finished()
  expected = _take(pipe, 6)
  with ocp.CheckpointManager(tmp_path / "ckpt") as manager:
    restored = manager.restore(5, args=ocp.args.Composite(data=ocp.args.JsonRestore()))["data"]
  fresh = PromptPipeline(examples, tok, cfg, process_index=0, process_count=1)
  fresh.set_state(restored)
  _same_batches(_take(fresh, 6), expected)


def test_long_runs_of_overlong_prompts_straddling_epochs_are_not_an_error(tok):
  # One usable prompt in 8: with seed 0 the reshuffled epochs put 8 over-long prompts in a row across an epoch
  # boundary (positions 1..8), which must not be mistaken for "every prompt is too long".
  examples = [Example(id=f"s{i}", domain="math", prompt="x" * (1 if i == 0 else 200), ground_truth="1")
              for i in range(8)]
  pipe = PromptPipeline(examples, tok, PipelineConfig(batch_size=1, seed=0, max_prompt_length=120),
                        process_index=0, process_count=1)
  batches = _take(pipe, 40)
  assert {b.examples[0].id for b in batches} == {"s0"}
  assert pipe.stats == {"filtered": int(batches[-1].positions[0]) + 1 - 40, "truncated": 0, "delivered": 40}
  assert [int(b.epochs[0]) for b in batches] == list(range(40))
