"""The embedded data and the rewards agree: a correct response to an embedded example scores 1, a wrong one less.

Correct responses are built from the ground truth (\\boxed{answer}, <answer> tags, the reference solution in a
fenced block, text satisfying the IFEval instruction) and scored by `prorl_jax.rewards.score`, the verifiers the
trainer uses.
"""

import pytest

from prorl_jax.data import embedded_dataset

rewards = pytest.importorskip("prorl_jax.rewards")


def _ifeval_response(instruction, kw):
  """A response that follows one IFEval instruction, or None for instructions not covered here."""
  body = "Gardens teach patience and care. They reward steady work over many seasons."
  return {
      "punctuation:no_comma": body,
      "keywords:existence": body + " " + " ".join(kw.get("keywords", [])) + ".",
      "startend:quotation": f'"{body}"',
      "detectable_format:title": f"<<A Small Title>>\n{body}",
      "startend:end_checker": f"{body} {kw.get('end_phrase')}",
      "detectable_content:postscript": f"{body}\n\n{kw.get('postscript_marker')} Thanks for reading.",
      "detectable_content:number_placeholders": body + " " + " ".join(f"[slot{i}]" for i in
                                                                     range(kw.get("num_placeholders", 0))),
      "detectable_format:number_highlighted_sections": body + " " + " ".join(
          f"*part {i}*" for i in range(kw.get("num_highlights", 0))),
      "detectable_format:number_bullet_lists": "\n".join(f"* Point {i}." for i in range(kw.get("num_bullets", 0))),
      "length_constraints:number_paragraphs": "\n***\n".join(f"Paragraph {i} text." for i in
                                                            range(kw.get("num_paragraphs", 0))),
  }.get(instruction)


def _correct(e):
  if e.domain == "math":
    return f"Adding it up carefully, the final answer is \\boxed{{{e.ground_truth}}}."
  if e.domain == "stem":
    return f"Checking each option, the answer is \\boxed{{{e.ground_truth}}}."
  if e.domain == "logic":
    return f"Working through it.\n<answer>{e.ground_truth['entry']['answer']}</answer>"
  if e.domain == "code":
    return f"Here is my solution.\n```python\n{e.extra['reference_solution']}```"
  (instruction,), (kw,) = e.ground_truth["instruction_id_list"], e.ground_truth["kwargs"]
  return _ifeval_response(instruction, kw)


def test_correct_responses_score_one_and_wrong_ones_less():
  examples = embedded_dataset(20, seed=21, domains=("math", "code", "stem", "logic"))
  ifeval = [e for e in embedded_dataset(400, seed=21, domains=("ifeval",))
            if len(e.ground_truth["instruction_id_list"]) == 1 and _correct(e) is not None]
  assert len({e.ground_truth["instruction_id_list"][0] for e in ifeval}) >= 8
  for e in examples + ifeval[:12]:
    response = _correct(e)
    assert rewards.score(e.domain, response, e.ground_truth) == 1.0, (e.id, e.prompt, response)
  for e in examples[:8]:
    wrong = {"math": "\\boxed{-987654}", "stem": "\\boxed{Z}", "logic": "<answer>-987654</answer>",
             "code": "```python\nprint(1)\n```"}[e.domain]
    assert rewards.score(e.domain, wrong, e.ground_truth) < 1.0, e.id
