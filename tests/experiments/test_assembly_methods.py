"""The assembly-methods driver (experiments.assembly_methods): LCRL variants, claims and report, a smoke run."""

from __future__ import annotations

import json

import pytest


def test_experiment_lcrl_variants_configure_the_policy():
  from experiments.assembly_methods import default_config, run_config

  exp = default_config()
  exp.peg = "square"
  c = run_config(exp, "ppo", "rl_compliance_lcrl")
  assert c.ppo.lcrl_graph == "results/cs3_square/connection_graph.json" and c.env.compliance
  assert run_config(exp, "ddpg", "rl_compliance_lcrl_full").ddpg.lcrl_graph == "full"
  assert run_config(exp, "ppo", "rl_compliance").ppo.lcrl_graph == ""


def test_experiment_report_judges_lcrl_claims_and_matches_curves(tmp_path):
  """Synthetic per-seed figures: LCRL clearly faster -> 'confirmed'; equal forces -> overlap; curves matched by step."""
  from experiments import assembly_methods as experiment

  def seeds(steps80, force, success_curve):
    return {"steps_to_80": steps80, "wall_s_to_80": [s / 100 for s in steps80], "final_success_rate": [1.0] * 5,
            "final_return": [17.0] * 5, "insertion_time_s": [0.3] * 5, "peak_force_n": force,
            "curve": {"env_steps": [1000, 2000], "success": success_curve}, "env_steps": 2000, "wall_s": 1.0}

  force = [18.0, 19.0, 20.0, 21.0, 22.0]
  results = {}
  for key, s in (("ppo/rl_compliance_lcrl", seeds([50, 52, 54, 56, 58], force, [[0.5] * 5, [0.9] * 5])),
                 ("ppo/rl_compliance", seeds([90, 92, 94, 96, 98], force, [[0.1] * 5, [0.6] * 5]))):
    results[key] = {"seeds": s, "summary": experiment.summarize(s), "budget": 2000}
  lines = experiment.claims(results)
  assert any("LCRL vs global data efficiency" in x and ": confirmed" in x for x in lines)
  assert any("LCRL vs global more stable" in x and "inconclusive" in x for x in lines)
  exp = experiment.default_config()
  exp.update(peg="square", algos="ppo", variants="rl_compliance_lcrl,rl_compliance")
  with open(experiment.report(exp, results, str(tmp_path))) as f:
    text = f.read()
  assert text.startswith("# LCRL experiment on `square`")
  assert "| 1,000 | 0.50 [0.50, 0.50] | 0.10 [0.10, 0.10] |" in text
  # an unfinished run is not judged on its "final" figures (they would compare different env steps)
  results["ppo/rl_compliance"]["seeds"]["env_steps"] = 1000
  # ... but steps to 80% are, once every seed of both has crossed (a first crossing cannot change)
  lines = experiment.claims(results)
  assert any("not judged yet" in x for x in lines)
  assert not any("final reward" in x or "peak force" in x for x in lines)
  assert any("data efficiency" in x and ": confirmed" in x for x in lines)


@pytest.mark.slow
def test_experiment_driver_smoke(tmp_path):
  """The experiment driver end to end on a tiny budget: two variants (without PEAD: its stages would add compiled
  programs; the switch is covered by the resume test), report, plots, results JSON, resume."""
  from experiments import assembly_methods as experiment

  exp = experiment.default_config()
  exp.update(peg="square", algos="ppo", variants="rl_alone,rl_compliance", seeds=2, ppo_env_steps=128,
             evals_per_run=2, eval_envs=8,
             run_overrides=json.dumps({"env": {"episode_steps": 20},
                                       "ppo": {"num_envs": 8, "rollout_len": 8, "minibatches": 2, "epochs": 2,
                                               "hidden": [16, 16]}}))
  res = experiment.run(exp, str(tmp_path), log=lambda m: None, progress=False)
  assert set(res["results"]) == {"ppo/rl_alone", "ppo/rl_compliance"}
  for name in ("report.md", "results.json", "learning_curves.png", "steps_to_80.png"):
    assert (tmp_path / name).exists()
  with open(tmp_path / "results.json") as f:
    saved = json.load(f)
  seeds = saved["results"]["ppo/rl_compliance"]["seeds"]
  assert len(seeds["final_success_rate"]) == 2
  # a second call resumes (finished runs do no work) and reproduces the same figures
  again = experiment.run(exp, str(tmp_path), log=lambda m: None, progress=False)
  assert again["results"] == res["results"]
