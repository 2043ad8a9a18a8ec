"""The transfer comparison driver (experiments.transfer): config validation and a smoke run on a new geometry."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from control_brax import etcl, wdpd
from control_brax.config import load_peg


def test_transfer_rejects_unknown_etcl_law(tmp_path):
  from experiments import transfer  # noqa: PLC0415

  c = transfer.default_config()
  c.transfer.etcl_law = "stiffer"
  with pytest.raises(ValueError, match="config.transfer.etcl_law"):
    transfer.run("square", "l_shape", str(tmp_path), c, progress=False, log=lambda m: None)


def test_transfer_validates_every_derived_config_before_training(tmp_path, monkeypatch):
  """A method's run config that does not validate (here: ETCL's reconfigured env made out of range) stops the
  comparison before the teacher trains and before --out is created (issue 25 item 7: it used to surface only after
  the teacher's training)."""
  from experiments import transfer  # noqa: PLC0415

  original = etcl.reconfigure_env

  def bad_gains(*args):
    env = original(*args)
    env.episode_steps = -1  # out of range: only the ETCL methods' run configs carry it
    return env

  monkeypatch.setattr(etcl, "reconfigure_env", bad_gains)
  trained = []
  monkeypatch.setattr(transfer, "_train", lambda *a, **k: trained.append(a) or {})
  with pytest.raises(ValueError, match="config.env.episode_steps"):
    transfer.run("square", "l_shape", str(tmp_path / "out"), transfer.default_config(), progress=False,
                 log=lambda m: None)
  assert not trained and not (tmp_path / "out").exists()


def test_transfer_rejects_an_unknown_method_in_one_line(tmp_path):
  from confspec import ConfigError  # noqa: PLC0415
  from experiments import transfer  # noqa: PLC0415

  with pytest.raises(ConfigError, match="--methods: 'foo' is not a method"):
    transfer.run("square", "l_shape", str(tmp_path / "out"), progress=False, log=lambda m: None, methods=("foo",))
  assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_transfer_new_geometry_file(tmp_path):
  """A geometry given only as a parameter file (a rect variant written here) runs through the transfer driver."""
  from experiments import transfer  # noqa: PLC0415

  peg = tmp_path / "rect_wide.py"
  peg.write_text("from control_brax.geometry import base_peg\n\n\ndef get_config():\n  c = base_peg()\n"
                 "  c.name = 'rect_wide'\n  c.rects = ((0.0, 0.0, 0.016, 0.008),)\n  c.clearance = 0.0006\n"
                 "  return c\n")
  c = transfer.default_config()
  c.ppo.num_envs, c.ppo.rollout_len, c.ppo.minibatches = 8, 4, 2
  c.train.eval_envs, c.train.eval_every_steps, c.train.checkpoint_every_steps = 4, 32, 64
  c.env.episode_steps = 20
  c.transfer.seeds, c.transfer.budget_steps, c.transfer.teacher_steps = 2, 64, 32
  c.transfer.distill_rollout_len, c.transfer.distill_steps = 2, 5
  # Only the method that uses every piece (teacher, ETCL gains and WDPD weights from the file's features,
  # distillation): each method is one more compiled RL program, and the suite has a time budget.
  res = transfer.run("square", str(peg), str(tmp_path / "out"), c, progress=False, log=lambda m: None,
                     methods=("etcl_wdpd",))
  js = transfer.contract_json(res)
  assert js["target"] == "rect_wide"
  m = "etcl_wdpd"
  for k in ("steps_to_80", "wall_s_to_80"):
    assert set(js[m][k]) == {"median", "ci95"} and len(js[m][k]["ci95"]) == 2
  assert 0 <= js[m]["final_success_rate"] <= 1
  assert len(res["results"][m]["seeds"]["final_success_rate"]) == 2
  assert all(js[o] is None for o in transfer.METHODS if o != m)
  assert set(res["meta"]["unfinished"]) == set(transfer.METHODS) - {m}
  assert os.path.exists(tmp_path / "out" / "report.md")
  with open(tmp_path / "out" / "runs" / "etcl_wdpd" / "distill.json") as f:
    d = json.load(f)
  np.testing.assert_allclose(d["weights"], wdpd.weights(etcl.features(load_peg("square")),
                                                        etcl.features(load_peg(str(peg)))), rtol=1e-6)


def test_a_run_stopped_by_a_signal_is_not_marked_done(tmp_path, monkeypatch):
  """control_brax.train returns (after saving) when SIGTERM stops it; the driver then exits 143 itself instead of
  writing done.json and starting the next method (a re-run resumes the stopped run)."""
  import control_brax.train as cb_train  # noqa: PLC0415
  from experiments import transfer  # noqa: PLC0415

  monkeypatch.setattr(cb_train, "train", lambda *a, **k: {"status": "stopped by signal 15", "signal": 15})
  with pytest.raises(SystemExit) as e:
    transfer._train(None, str(tmp_path), log=lambda m: None)
  assert e.value.code == 143 and not (tmp_path / "done.json").exists()
