"""Tests for prorl_jax.evaluation.plots: the PNG is written and shows what it should."""

import numpy as np
import pytest
from matplotlib import image as mpimg

from prorl_jax.evaluation import ProblemResult, summarize
from prorl_jax.evaluation.plots import curve_points, pass_at_k_figure, plot_pass_at_k


def _results(benchmark, p_solve, n=16, problems=12, seed=0):
  rng = np.random.default_rng(seed)
  out = []
  for i in range(problems):
    p = p_solve * (i + 1) / problems  # problems of graded difficulty, so pass@k rises with k
    scores = (rng.random(n) < p).astype(float).tolist()
    out.append(ProblemResult(index=i, id=f"{benchmark}/{i}", benchmark=benchmark, domain="math", scores=scores,
                             lengths=[10] * n, finished_by_eos=[True] * n))
  return out


@pytest.fixture(scope="module")
def curves():
  base = summarize(_results("aime2024", 0.2) + _results("math500", 0.5, seed=1))
  trained = summarize(_results("aime2024", 0.35, seed=2) + _results("math500", 0.7, seed=3))
  return {"baseline": base, "trained": trained}


def test_curve_points_are_pass_at_k_with_sorted_ks_and_no_mean_score():
  summary = {"score@1": 0.7, "pass@1": 0.5, "pass@4": 0.9, "pass@2": 0.8, "num_samples": 4}
  assert curve_points(summary) == ([1, 2, 4], [0.5, 0.8, 0.9])


def test_png_is_written_and_not_blank(tmp_path, curves):
  path = plot_pass_at_k(curves, tmp_path / "plots" / "pass_at_k.png", title="pass@k")
  data = path.read_bytes()
  assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
  pixels = mpimg.imread(path)
  assert pixels.shape[0] > 400 and pixels.shape[1] > 700
  rgb = pixels[..., :3].reshape(-1, 3)
  assert rgb.std(axis=0).min() > 0.02  # lines and text, not a flat image
  assert len(np.unique(np.round(rgb, 2), axis=0)) > 20  # several colours (one per benchmark)


def test_lines_share_colour_per_benchmark_and_style_per_checkpoint(curves):
  fig = pass_at_k_figure(curves)
  ax = fig.axes[0]
  lines = {line.get_label(): line for line in ax.get_lines()}
  assert set(lines) == {"aime2024 (baseline)", "aime2024 (trained)", "math500 (baseline)", "math500 (trained)"}
  for bench in ("aime2024", "math500"):
    base, trained = lines[f"{bench} (baseline)"], lines[f"{bench} (trained)"]
    assert base.get_color() == trained.get_color()
    assert base.get_linestyle() != trained.get_linestyle()
    np.testing.assert_allclose(trained.get_xdata(), [1, 2, 4, 8, 16])
    ks, values = curve_points(curves["trained"][bench])
    np.testing.assert_allclose(trained.get_ydata(), values)
  assert lines["aime2024 (baseline)"].get_color() != lines["math500 (baseline)"].get_color()
  assert ax.get_xscale() == "log" and ax.get_xaxis().get_scale() == "log"
  assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "2", "4", "8", "16"]
  assert len(ax.get_legend().get_texts()) == 2  # the checkpoint legend (the benchmark one is an extra artist)


def test_problem_results_are_summarized_and_all_is_skipped(curves):
  fig = pass_at_k_figure({"only": _results("ifeval", 0.5)})
  labels = [line.get_label() for line in fig.axes[0].get_lines()]
  assert labels == ["ifeval (only)"]
  fig = pass_at_k_figure(curves, include_all=True)
  assert "all (trained)" in [line.get_label() for line in fig.axes[0].get_lines()]


def test_bad_input_is_named(curves):
  with pytest.raises(ValueError, match="non-empty"):
    pass_at_k_figure({})
  with pytest.raises(ValueError, match="gpqa"):
    pass_at_k_figure(curves, benchmarks=["gpqa"])
  with pytest.raises(ValueError, match="at most 4"):
    pass_at_k_figure({str(i): curves["baseline"] for i in range(5)})
  with pytest.raises(ValueError, match="must map benchmark"):
    pass_at_k_figure({"x": 3})
