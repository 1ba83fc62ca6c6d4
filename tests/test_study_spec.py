"""Reading a study config (prorl_jax.study.spec): overrides as on the command line, and one-line errors for what
would otherwise fail an hour into a study."""

import pathlib

import pytest

from prorl_jax.errors import ConfigError
from prorl_jax.study import apply_overrides, resolve
from prorl_jax.study.spec import load_config_file
from prorl_jax.training import default_config

ROOT = pathlib.Path(__file__).resolve().parent.parent
STUDY = ROOT / "experiments" / "configs" / "study_prorl_claims.py"


def test_overrides_parse_like_the_command_line():
  c = default_config().unlock()
  apply_overrides(c, ["algorithm.clip_high=0.2", "dynamic_sampling.enable=False", "rollout.n=4",
                      "algorithm.advantage=grpo", "optimizer.lr=1", "--config.seed=3",
                      "algorithm.rollout_correction.threshold=(0.5, 2.0)", "data.train=embedded:chain?levels=1-3"],
                  what="t")
  assert c.algorithm.clip_high == 0.2 and c.dynamic_sampling.enable is False and c.rollout.n == 4
  assert c.algorithm.advantage == "grpo" and c.optimizer.lr == 1.0 and isinstance(c.optimizer.lr, float)
  assert c.seed == 3 and c.algorithm.rollout_correction.threshold == (0.5, 2.0)
  assert c.data.train == "embedded:chain?levels=1-3"


@pytest.mark.parametrize("override,message", [
    ("algorithm.clip_hihg=0.2", "no field 'algorithm.clip_hihg'; did you mean 'algorithm.clip_high'"),
    ("rollout.n=four", "rollout.n='four' is not a Python literal"),
    ("rollout.n=1.5", "rollout.n='1.5' is a float, the field is a int"),
    ("dynamic_sampling.enable=1", "must be True or False"),
    ("algorithm=1", "is a group of fields"),
    ("clip_high", "must look like field=value"),
])
def test_bad_override_names_the_field(override, message):
  with pytest.raises(ConfigError, match="variant 'x'") as e:
    apply_overrides(default_config().unlock(), [override], what="variant 'x'")
  assert message in str(e.value)


def test_the_study_resolves(tmp_path):
  study = resolve(load_config_file(STUDY), STUDY, tmp_path)
  assert study.variants == ("prorlv2", "grpo_v1", "no_dynamic_sampling", "no_kl", "no_reset", "symmetric_clip")
  assert len(study.runs) == 6 * len(study.seeds)
  run = next(r for r in study.runs if r.variant == "symmetric_clip" and r.seed == study.seeds[-1])
  config = study.run_config(run)
  assert config.algorithm.clip_high == config.algorithm.clip_low == 0.2 and config.seed == study.seeds[-1]
  assert run.workdir == tmp_path / "runs" / "symmetric_clip" / f"seed{study.seeds[-1]}"
  assert study.eval_variants() == ("prorlv2",) and 0 in study.eval_steps()
  grpo = study.run_config(next(r for r in study.runs if r.variant == "grpo_v1"))
  assert grpo.algorithm.advantage == "grpo" and grpo.reference_reset.reset_optimizer is True


def test_smoke_and_subsets(tmp_path):
  config = load_config_file(STUDY)
  smoke = resolve(config, STUDY, tmp_path, smoke=True)
  assert smoke.variants == ("prorlv2", "no_reset") and smoke.seeds == (0,)
  assert smoke.total_steps < 10 and smoke.eval.num_samples <= 8
  subset = resolve(config, STUDY, tmp_path, variants=["no_kl"], seeds=[5])
  assert [r.name for r in subset.runs] == ["no_kl/seed5"]
  with pytest.raises(ConfigError, match=r"unknown variant\(s\) \['no_klx'\]"):
    resolve(config, STUDY, tmp_path, variants=["no_klx"])


def test_study_config_errors(tmp_path):
  config = load_config_file(STUDY)
  bad = load_config_file(STUDY)
  bad.variants.no_kl = ("algorithm.kl_coeff=0",)
  with pytest.raises(ConfigError, match="variant 'no_kl'.*did you mean 'algorithm.kl_coef'"):
    resolve(bad, STUDY, tmp_path)
  bad = load_config_file(STUDY)
  bad.eval.steps = (0, 41)
  with pytest.raises(ConfigError, match=r"eval.steps \[41\]"):
    resolve(bad, STUDY, tmp_path)
  bad = load_config_file(STUDY)
  bad.overrides = ("checkpoint.keep_latest=2",)
  with pytest.raises(ConfigError, match="checkpoint.keep_latest=2 would delete"):
    resolve(bad, STUDY, tmp_path)
  bad = load_config_file(STUDY)
  bad.evals = bad.eval
  with pytest.raises(ConfigError, match="unknown field 'evals'; did you mean 'eval'"):
    resolve(bad, STUDY, tmp_path)
  bad = load_config_file(STUDY)
  bad.variants.broken = ("rollout.n=0",)  # the trainer's own validation of each run's config
  with pytest.raises(ConfigError, match="rollout.n"):
    resolve(bad, STUDY, tmp_path)
  assert resolve(config, STUDY, tmp_path).runs  # the untouched config still resolves
