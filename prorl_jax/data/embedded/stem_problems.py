"""Synthetic STEM multiple-choice questions (physics, chemistry, arithmetic) with a letter answer.

Each template computes the correct value and three distractors from typical mistakes (wrong formula, missing
factor, unit slip); options are formatted to three significant figures, must all differ, and are shuffled. The
ground truth is the letter of the correct option; `extra` keeps the options, the correct value and the
parameters so tests can recompute it.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable

from prorl_jax.data.embedded.common import Problem

LETTERS = "ABCD"
G = 9.8  # m/s^2
MOLAR_MASS = {"H2O": 18.0, "CO2": 44.0, "NaCl": 58.5, "CH4": 16.0, "NH3": 17.0, "O2": 32.0, "C6H12O6": 180.0,
              "CaCO3": 100.0, "HCl": 36.5, "N2": 28.0}
ATOMIC_MASS = {"H": 1.0, "C": 12.0, "N": 14.0, "O": 16.0, "Na": 23.0, "Cl": 35.5, "S": 32.0, "Ca": 40.0, "K": 39.0}


def fmt(value: float) -> str:
  """Integers exactly ("5605"); other values to three significant figures without trailing zeros ("0.0333")."""
  if float(value).is_integer() and abs(value) < 1e12:
    return str(int(value))
  text = f"{value:.3g}"
  if "e" in text:
    text = f"{float(text):.10f}".rstrip("0").rstrip(".")
  return text


def _too_close(text: str, value: float) -> bool:
  """Whether option `text` could be read as `value` (equal, or within rounding of a 3-s.f. number)."""
  if float(text).is_integer() and float(value).is_integer():
    return float(text) == value
  return math.isclose(float(text), value, rel_tol=5e-3)


def _kinematics(r):
  a, t = r.randint(1, 9), r.randint(2, 12)
  if r.random() < 0.5:
    return (f"A car starts from rest and accelerates uniformly at {a} m/s^2 for {t} s. What is its final speed in "
            "m/s?", a * t, [a * t * t / 2, a + t, a * t * t], {"a": a, "t": t, "ask": "speed"})
  return (f"A car starts from rest and accelerates uniformly at {a} m/s^2 for {t} s. How far does it travel, in "
          "metres?", a * t * t / 2, [a * t * t, a * t, a * t / 2], {"a": a, "t": t, "ask": "distance"})


def _ohm(r):
  v, res = r.choice([3, 5, 6, 9, 12, 24, 48, 110, 120, 230]), r.choice([2, 4, 5, 8, 10, 20, 47, 100, 220])
  if r.random() < 0.5:
    return (f"A {v} V battery drives current through a {res} ohm resistor. What is the current in amperes?",
            v / res, [v * res, res / v, v / res / 2], {"v": v, "r": res, "ask": "current"})
  return (f"A {res} ohm resistor is connected across {v} V. What power, in watts, does it dissipate?",
          v * v / res, [v / res, v * res, v * v * res], {"v": v, "r": res, "ask": "power"})


def _kinetic_energy(r):
  m, v = r.randint(1, 20) * 5, r.randint(2, 30)
  return (f"What is the kinetic energy, in joules, of a {m} kg object moving at {v} m/s?", m * v * v / 2,
          [m * v * v, m * v / 2, m * v], {"m": m, "v": v})


def _potential_energy(r):
  m, h = r.randint(1, 50), r.randint(2, 40)
  return (f"How much gravitational potential energy, in joules, does a {m} kg mass gain when lifted {h} m? "
          f"Use g = {G} m/s^2.", m * G * h, [m * h, m * G * h / 2, m * G / h], {"m": m, "h": h})


def _density(r):
  mass, vol = r.randint(10, 500), r.randint(2, 50)
  return (f"A block has a mass of {mass} g and a volume of {vol} cm^3. What is its density in g/cm^3?",
          mass / vol, [vol / mass, mass * vol, mass / vol * 10], {"mass": mass, "vol": vol})


def _moles(r):
  compound = r.choice(sorted(MOLAR_MASS))
  mm = MOLAR_MASS[compound]
  grams = round(mm * r.choice([0.25, 0.5, 1.5, 2, 2.5, 3, 4, 5]) * r.choice([1, 2]), 2)
  return (f"How many moles are in {grams:.10g} g of {compound} (molar mass {mm:.10g} g/mol)?", grams / mm,
          [grams * mm, mm / grams, grams / mm * 2], {"grams": grams, "compound": compound})


def _molar_mass(r):
  elements = r.sample(sorted(ATOMIC_MASS), 2)
  counts = [r.randint(1, 4) for _ in elements]
  formula = "".join(e + (str(c) if c > 1 else "") for e, c in zip(elements, counts))
  value = sum(ATOMIC_MASS[e] * c for e, c in zip(elements, counts))
  table = ", ".join(f"{e} = {ATOMIC_MASS[e]:.10g}" for e in elements)
  distractors = [sum(ATOMIC_MASS[e] for e in elements), value + ATOMIC_MASS[elements[0]],
                 sum(ATOMIC_MASS[e] * (c + 1) for e, c in zip(elements, counts))]
  return (f"Using the atomic masses {table} (g/mol), what is the molar mass of a (hypothetical) compound with "
          f"formula {formula}, in g/mol?", value, distractors, {"elements": elements, "counts": counts})


def _ph(r):
  n = r.randint(1, 6)
  return (f"What is the pH of a 1.0 x 10^-{n} M solution of a strong monoprotic acid?", n, [14 - n, n + 1, -n],
          {"n": n})


def _wavelength(r):
  v, f = r.choice([340, 343, 1500, 330]), r.choice([100, 200, 250, 400, 500, 680, 1000])
  return (f"A sound wave travels at {v} m/s with frequency {f} Hz. What is its wavelength in metres?", v / f,
          [f / v, v * f, v / f / 2], {"v": v, "f": f})


def _collision(r):
  m1, m2, v1 = r.randint(1, 10), r.randint(1, 10), r.randint(2, 20)
  return (f"A {m1} kg cart moving at {v1} m/s collides with a stationary {m2} kg cart and they stick together. "
          "What is their common speed afterwards, in m/s?", m1 * v1 / (m1 + m2),
          [v1 / 2, m2 * v1 / (m1 + m2), m1 * v1 / m2], {"m1": m1, "m2": m2, "v1": v1})


def _boyle(r):
  p1, v1, p2 = r.randint(1, 5), r.randint(2, 20), r.randint(6, 12)
  return (f"A gas occupies {v1} L at {p1} atm. At constant temperature the pressure is raised to {p2} atm. What is "
          "the new volume in litres?", p1 * v1 / p2, [p2 * v1 / p1, v1 * p1 * p2, v1 - (p2 - p1)],
          {"p1": p1, "v1": v1, "p2": p2})


def _heat(r):
  m, dt = r.randint(1, 20) * 50, r.randint(2, 40)
  return (f"How much heat, in joules, raises the temperature of {m} g of water by {dt} degrees C? The specific "
          "heat of water is 4.18 J/(g C).", m * 4.18 * dt, [m * dt, m * 4.18 / dt, m * 4.18 * dt / 1000],
          {"m": m, "dt": dt})


def _force(r):
  m, a = r.randint(2, 80), r.randint(1, 12)
  return (f"What net force, in newtons, accelerates a {m} kg mass at {a} m/s^2?", m * a,
          [m / a, m + a, m * a * G], {"m": m, "a": a})


def _half_life(r):
  m0, n, t_half = r.choice([16, 32, 64, 80, 96, 128, 200]), r.randint(1, 5), r.randint(2, 30)
  return (f"A radioactive sample of {m0} g has a half-life of {t_half} days. How many grams remain after "
          f"{n * t_half} days?", m0 / 2**n, [m0 / (2 * n), m0 - m0 / 2**n, m0 / 2**(n + 1)],
          {"m0": m0, "n": n, "t_half": t_half})


def _speed_convert(r):
  kmh = r.randint(1, 40) * 9
  return (f"Convert {kmh} km/h to m/s.", kmh / 3.6, [kmh * 3.6, kmh / 60, kmh / 36], {"kmh": kmh})


def _product(r):
  a, b = r.randint(11, 99), r.randint(11, 99)
  return (f"What is {a} x {b}?", a * b, [a * b + 10, a * b - a, (a + 1) * (b - 1) + 7], {"a": a, "b": b})


TEMPLATES: dict[str, Callable[[random.Random], tuple]] = {
    "kinematics": _kinematics, "ohm": _ohm, "kinetic_energy": _kinetic_energy, "potential_energy": _potential_energy,
    "density": _density, "moles": _moles, "molar_mass": _molar_mass, "ph": _ph, "wavelength": _wavelength,
    "collision": _collision, "boyle": _boyle, "heat": _heat, "force": _force, "half_life": _half_life,
    "speed_convert": _speed_convert, "product": _product,
}


def generate(rng: random.Random) -> Problem:
  """One four-option question; ground truth is the letter of the correct option."""
  while True:
    name = rng.choice(sorted(TEMPLATES))
    question, value, distractors, params = TEMPLATES[name](rng)
    correct = fmt(value)
    wrong = []
    for d in distractors:  # Replace a distractor that reads like another option by a scaled value.
      text, scale = fmt(d), 2.0
      while text in wrong or _too_close(text, value):
        text, scale = fmt(d * scale + scale), scale + 1.0
      wrong.append(text)
    if len(set(wrong) | {correct}) == 4:
      break
  options = wrong + [correct]
  rng.shuffle(options)
  letter = LETTERS[options.index(correct)]
  body = "\n".join(f"{LETTERS[i]}. {o}" for i, o in enumerate(options))
  return Problem(prompt=f"{question}\n\n{body}", ground_truth=letter, split_key=question,
                 extra={"source": "embedded/stem", "template": name, "options": options, "correct_value": value,
                        "params": params})
