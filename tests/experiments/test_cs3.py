"""The CS3 binary (experiments.cs3): graph files from the estimator on a real env."""

from __future__ import annotations

import json
import os

import chex
import numpy as np
import pytest


@pytest.mark.slow
def test_cs3_binary_on_free_space_env(tmp_path):
  """In free space (states before first contact) no action changes the wrench, and each axis moves its own error.

  States at reset with no initial error (`error_scale` 0): the peg hangs
  aligned 2 mm above the mouth and one control step moves it at most ~1.2 mm
  (reference 0.3 mm, admittance pressing toward its 5 N set-point, a probe
  action's 0.5 mm), so nothing touches: every F/T column scores exactly 0 and
  each action's own pose-error column is an edge (the holder's joints are the
  pose coordinates).
  """
  from control_brax.rl.config import base_rl_config
  from experiments import cs3

  c = base_rl_config("ppo")
  c.env.peg = "square"
  c.env.error_scale = 0.0
  c.cs3.update(samples=32, batch=16, pool=8, pool_steps=1, rollout_action_scale=0.0)
  res = cs3.run(c, str(tmp_path), progress=False)
  graph = np.asarray(res["graph"])
  chex.assert_shape(graph, (6, 12))
  np.testing.assert_array_equal(np.asarray(res["scores"])[:, :6], 0.0)
  np.testing.assert_array_equal(np.diag(graph[:, 6:]), 1)
  with open(os.path.join(tmp_path, "connection_graph.json")) as f:
    saved = json.load(f)
  assert {"scores", "stderr", "graph", "actions", "states"} <= set(saved)
  assert os.path.exists(os.path.join(tmp_path, "connection_graph.png"))
