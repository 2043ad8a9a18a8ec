"""The ETCL acceptance driver (experiments.etcl_acceptance) and its committed decisive run."""

from __future__ import annotations

import json
import math
import os

from conftest import REPO

from control_brax import etcl
from control_brax.config import base_env_config, load_peg
from experiments import etcl_acceptance


def test_etcl_scripted_smoke():
  """The reconfigured gains run on the scripted controller (C engine), paired with the unreconfigured ones."""
  from control_brax import scripted  # noqa: PLC0415

  env = scripted.gains(base_env_config(), 1000.0, 0.7, 1.0, 10.0)
  env.peg = "l_shape"
  env_b = etcl.reconfigure_env(env, load_peg("square"), load_peg("l_shape"))
  assert env_b.desired_force[2] > env.desired_force[2]
  for e in (env, env_b):
    res = scripted.summarize(scripted.run_episodes(e, 2, seed=5))
    assert res["episodes"] == 2 and 0 <= res["success_rate"] <= 1 and math.isfinite(res["peak_force_n"])


def test_committed_etcl_report():
  """The committed acceptance report covers >= 200 paired episodes per target and says whether each passes."""
  path = os.path.join(REPO, "results", "etcl", "acceptance.json")
  assert os.path.exists(path), "results/etcl/acceptance.json is committed (experiments.etcl_acceptance)"
  with open(path) as f:
    rep = json.load(f)
  assert rep["episodes"] >= 200
  for r in rep["results"].values():
    assert r["passes"] == etcl_acceptance.passes(r)
    assert r["unreconfigured"]["episodes"] == r["etcl"]["episodes"] == rep["episodes"]
  # the default law is the one the decisive run checked, on both targets and both source gain sets
  assert {f"{etcl.DEFAULT_LAW}/{s}/{t}" for s in ("published", "retuned") for t in ("l_shape", "rect")} <= set(
      rep["results"])
