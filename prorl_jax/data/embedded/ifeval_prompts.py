"""IFEval-style instruction-following prompts: a writing task plus 1-3 verifiable instructions.

Ground truth is {"instruction_id_list": [...], "kwargs": [{...}, ...]} with Google IFEval's instruction ids and
argument names (the arguments of each instruction's `build_description`), so IFEval's checkers (or the rewards
module's port of them) score responses. Instructions that cannot be satisfied together (lowercase + all capitals,
two layouts, JSON + most things, ...) are never combined. Left out: `language:response_language` and
`change_case:capital_word_frequency`, whose checkers need langdetect / NLTK data.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from prorl_jax.data.embedded.common import Problem

_TOPICS = ("the ocean", "urban gardening", "the history of the bicycle", "learning a new language", "remote work",
           "volcanoes", "honeybees", "the night sky", "renewable energy", "chess", "street food", "public libraries",
           "mountain hiking", "jazz music", "recycling", "the first day of school", "friendship", "rainforests",
           "ancient Rome", "coffee", "electric cars", "time management", "board games", "winter holidays",
           "photography", "the moon landing", "healthy sleep", "small businesses", "migratory birds", "robots")
_PRODUCTS = ("a solar-powered lantern", "a foldable kayak", "a smart water bottle", "noise-cancelling headphones",
             "a bamboo toothbrush", "a mechanical keyboard", "an indoor herb garden kit", "a travel pillow",
             "a weather station", "a language-learning app")
_JOBS = ("nurse", "park ranger", "software engineer", "baker", "librarian", "pilot", "teacher", "marine biologist",
         "carpenter", "journalist")
_PLACES = ("Lisbon", "Kyoto", "the Scottish Highlands", "Patagonia", "Marrakesh", "Iceland", "Vancouver",
           "the Amalfi Coast", "Cape Town", "Hanoi")
_TASKS = ("Write a short blog post about {topic}.", "Write a letter to a friend about {topic}.",
          "Explain {topic} to a ten-year-old.", "Write a product description for {product}.",
          "Write a short story about a {job} who becomes fascinated by {topic}.", "Write a poem about {topic}.",
          "Give advice to someone who wants to learn more about {topic}.", "Write a cover letter for a job as a {job}.",
          "Write a travel guide entry for {place}.", "Describe a typical day in the life of a {job}.",
          "Write a persuasive essay arguing that everyone should care about {topic}.",
          "Write an advertisement for {product} aimed at a {job}.")
_YES_NO = ("Is it a good idea to learn to cook before moving out?", "Should schools teach personal finance?",
           "Is it worth visiting {place} in winter?", "Can a {job} work remotely?",
           "Is {topic} a good subject for a school project?")
_KEYWORDS = ("balance", "curious", "journey", "remarkable", "simple", "future", "energy", "community", "patience",
             "bright", "window", "garden", "river", "careful", "quiet", "purpose", "vivid", "ancient", "mistake",
             "surprise")
_END_PHRASES = ("Is there anything else I can help with?", "Any other questions?", "Let me know if you have "
                "additional questions.", "That is all for now.")
_LAYOUT = frozenset({"detectable_format:number_bullet_lists", "length_constraints:number_paragraphs",
                     "detectable_format:multiple_sections", "length_constraints:nth_paragraph_first_word",
                     "detectable_format:json_format", "combination:two_responses"})
_REL = ("less than", "at least")

# Instruction id -> builder(rng, used_words) -> (kwargs, description).
Builder = Callable[[random.Random, set[str]], tuple[dict[str, Any], str]]


def _fresh(rng: random.Random, used: set[str], n: int) -> list[str]:
  words = rng.sample([w for w in _KEYWORDS if w not in used], n)
  used.update(words)
  return sorted(words)


def _keywords(rng, used):
  words = _fresh(rng, used, rng.randint(1, 3))
  return {"keywords": words}, f"Include the keywords {', '.join(repr(w) for w in words)} in the response."


def _frequency(rng, used):
  (word,), rel = _fresh(rng, used, 1), rng.choice(_REL)
  n = rng.randint(2, 4) if rel == "less than" else rng.randint(1, 4)
  return ({"keyword": word, "frequency": n, "relation": rel},
          f"In your response, the word {word} should appear {rel} {n} times.")


def _forbidden(rng, used):
  words = _fresh(rng, used, rng.randint(1, 3))
  return {"forbidden_words": words}, f"Do not include the keywords {', '.join(repr(w) for w in words)} in the response."


def _letter_frequency(rng, used):
  rel = rng.choice(_REL)
  letter = rng.choice("etaoinsr") if rel == "at least" else rng.choice("qxzj")
  n = rng.randint(3, 12) if rel == "at least" else rng.randint(2, 5)
  return ({"letter": letter, "let_frequency": n, "let_relation": rel},
          f"In your response, the letter {letter} should appear {rel} {n} times.")


def _num_words(rng, used):
  rel = rng.choice(_REL)
  n = rng.randrange(60, 401, 10) if rel == "less than" else rng.randrange(50, 301, 10)
  return {"num_words": n, "relation": rel}, f"Answer with {rel} {n} words."


def _num_sentences(rng, used):
  rel = rng.choice(_REL)
  n = rng.randint(3, 15) if rel == "less than" else rng.randint(2, 10)
  return {"num_sentences": n, "relation": rel}, f"Your response should contain {rel} {n} sentences."


def _paragraphs(rng, used):
  n = rng.randint(2, 5)
  return ({"num_paragraphs": n},
          f"There should be {n} paragraphs. Paragraphs are separated with the markdown divider: ***")


def _nth_paragraph(rng, used):
  n = rng.randint(2, 5)
  k, (word,) = rng.randint(1, n), _fresh(rng, used, 1)
  return ({"num_paragraphs": n, "nth_paragraph": k, "first_word": word},
          f"There should be {n} paragraphs. Paragraphs and only paragraphs are separated with each other by two new "
          f"lines as if it was '\\n\\n' in python. Paragraph {k} must start with word {word}.")


def _bullets(rng, used):
  n = rng.randint(2, 6)
  return ({"num_bullets": n}, f"Your answer must contain exactly {n} bullet points. Use the markdown bullet points "
          "such as:\n* This is point 1.\n* This is point 2")


def _highlights(rng, used):
  n = rng.randint(1, 4)
  return ({"num_highlights": n},
          f"Highlight at least {n} sections in your answer with markdown, i.e. *highlighted section*.")


def _sections(rng, used):
  n, splitter = rng.randint(2, 5), rng.choice(["Section", "SECTION"])
  return ({"section_spliter": splitter, "num_sections": n},
          f"Your response must have {n} sections. Mark the beginning of each section with {splitter} X, such as:\n"
          f"{splitter} 1\n[content of section 1]\n{splitter} 2\n[content of section 2]")


def _postscript(rng, used):
  marker = rng.choice(["P.S.", "P.P.S"])
  return ({"postscript_marker": marker},
          f"At the end of your response, please explicitly add a postscript starting with {marker}")


def _placeholders(rng, used):
  n = rng.randint(1, 4)
  return ({"num_placeholders": n}, f"The response must contain at least {n} placeholders represented by square "
          "brackets, such as [address].")


def _end(rng, used):
  phrase = rng.choice(_END_PHRASES)
  return ({"end_phrase": phrase},
          f"Finish your response with this exact phrase {phrase} No other words should follow this phrase.")


def _const(description: str) -> Builder:
  return lambda rng, used: ({}, description)


BUILDERS: dict[str, Builder] = {
    "keywords:existence": _keywords, "keywords:frequency": _frequency, "keywords:forbidden_words": _forbidden,
    "keywords:letter_frequency": _letter_frequency, "length_constraints:number_words": _num_words,
    "length_constraints:number_sentences": _num_sentences, "length_constraints:number_paragraphs": _paragraphs,
    "length_constraints:nth_paragraph_first_word": _nth_paragraph,
    "detectable_format:number_bullet_lists": _bullets, "detectable_format:number_highlighted_sections": _highlights,
    "detectable_format:multiple_sections": _sections,
    "detectable_format:title": _const("Your answer must contain a title, wrapped in double angular brackets, such "
                                      "as <<poem of joy>>."),
    "detectable_format:json_format": _const("Entire output should be wrapped in JSON format. You can use markdown "
                                            "ticks such as ```."),
    "detectable_content:postscript": _postscript, "detectable_content:number_placeholders": _placeholders,
    "startend:end_checker": _end,
    "startend:quotation": _const("Wrap your entire response with double quotation marks."),
    "change_case:english_lowercase": _const("Your entire response should be in English, and in all lowercase "
                                            "letters. No capital letters are allowed."),
    "change_case:english_capital": _const("Your entire response should be in English, and in all capital letters."),
    "punctuation:no_comma": _const("In your entire response, refrain from the use of any commas."),
    "combination:two_responses": _const("Give two different responses. Responses and only responses should be "
                                        "separated by 6 asterisk symbols: ******."),
}
# Used alone or with the few instructions listed in COMPATIBLE_WITH.
SPECIAL = ("combination:repeat_prompt", "detectable_format:constrained_response")
INSTRUCTION_IDS = tuple(sorted(BUILDERS)) + SPECIAL
COMPATIBLE_WITH = {
    "detectable_format:json_format": {"keywords:existence", "keywords:forbidden_words"},
    "combination:repeat_prompt": {"keywords:existence", "keywords:forbidden_words", "length_constraints:number_words",
                                  "change_case:english_lowercase", "change_case:english_capital"},
    "detectable_format:constrained_response": set(),
}
_PAIR_CONFLICTS = {
    frozenset({"change_case:english_lowercase", "change_case:english_capital"}),
    frozenset({"change_case:english_lowercase", "detectable_format:multiple_sections"}),
    frozenset({"startend:quotation", "detectable_format:title"}),
    frozenset({"length_constraints:number_words", "length_constraints:number_sentences"}),
}


def conflicts(a: str, b: str) -> bool:
  """Whether instructions `a` and `b` must not appear in one prompt."""
  if a == b or frozenset({a, b}) in _PAIR_CONFLICTS or (a in _LAYOUT and b in _LAYOUT):
    return True
  return any(x in COMPATIBLE_WITH and y not in COMPATIBLE_WITH[x] for x, y in ((a, b), (b, a)))


def _fill(template: str, rng: random.Random) -> str:
  return template.format(topic=rng.choice(_TOPICS), product=rng.choice(_PRODUCTS), job=rng.choice(_JOBS),
                         place=rng.choice(_PLACES))


def generate(rng: random.Random) -> Problem:
  """One prompt with 1-3 compatible instructions; ground truth in IFEval's format."""
  roll = rng.random()
  if roll < 0.04:
    base = _fill(rng.choice(_YES_NO), rng)
    return Problem(prompt=f"{base} Answer with one of the following options: ('My answer is yes.', 'My answer is "
                   "no.', 'My answer is maybe.')", ground_truth={"instruction_id_list": [SPECIAL[1]], "kwargs": [{}]},
                   extra={"source": "embedded/ifeval"})
  base = _fill(rng.choice(_TASKS), rng)
  ids: list[str] = ["combination:repeat_prompt"] if roll < 0.08 else []
  want = rng.choice([1, 1, 2, 2, 2, 3]) if not ids else rng.choice([1, 2])
  candidates = sorted(BUILDERS)
  while len(ids) < want:
    allowed = [c for c in candidates if not any(conflicts(c, i) for i in ids)]
    if not allowed:
      break
    ids.append(rng.choice(allowed))
  ids = [i for i in ids if i != "combination:repeat_prompt"] + [i for i in ids if i == "combination:repeat_prompt"]
  used = {w for w in _KEYWORDS if w in base.lower()}
  kwargs, texts = [], []
  for i in ids:
    if i == "combination:repeat_prompt":
      request = " ".join([base] + texts)
      kwargs.append({"prompt_to_repeat": request})
      texts.append("First repeat the request word for word without change, then give your answer (1. do not say any "
                   "words or characters before repeating the request; 2. the request you need to repeat does not "
                   "include this sentence)")
    else:
      kw, text = BUILDERS[i](rng, used)
      kwargs.append(kw)
      texts.append(text)
  return Problem(prompt=" ".join([base] + texts), ground_truth={"instruction_id_list": ids, "kwargs": kwargs},
                 extra={"source": "embedded/ifeval"})
