"""The demo end to end (its --quick version): every stage runs, and the report's figures are the run's own.

The check reads the stage files with its own code (not demo_report's) and compares with the values the report
prints in its "Figures and their sources" table.
"""

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO, full_opt_env


def _rows(path):
  with open(path) as f:
    return [json.loads(ln) for ln in f if ln.startswith("{")]


def _table(report: str) -> dict:
  lines = report.split("## Figures and their sources", 1)[1].splitlines()
  out = {}
  for ln in lines:
    cells = [c.strip() for c in ln.strip().strip("|").split("|")]
    if len(cells) == 3 and cells[0] not in ("figure", "---"):
      out[cells[0]] = cells[1]
  return out


def _same(shown: str, value) -> bool:
  if isinstance(value, bool) or value is None:
    return shown == {True: "True", False: "False", None: "n/a"}[value]
  return float(shown) == pytest.approx(float(value), rel=1e-3, abs=1e-12)


@pytest.mark.slow
def test_quick_demo_report_matches_its_metrics_files(tmp_path):
  out = tmp_path / "demo"
  proc = subprocess.run([sys.executable, "-m", "experiments.demo", f"--out={out}", "--quick"], cwd=REPO,
                        capture_output=True, text=True, timeout=1500, env=full_opt_env())
  assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
  assert proc.stdout.strip().splitlines()[-1].endswith("report.md")
  report = (out / "report.md").read_text()
  table = _table(report)
  train = [r for r in _rows(out / "pangu" / "metrics.jsonl") if "loss" in r]
  val = [r for r in _rows(out / "pangu" / "metrics.jsonl") if "val_loss" in r]
  parity = _rows(out / "parity.jsonl")[-1]
  spec = _rows(out / "generate_speculative.jsonl")[-1]
  rl = _rows(out / "rl_eval.jsonl")[-1]
  search = _rows(out / "sim" / "search.jsonl")
  load = np.sum([r["expert_load"] for r in train], axis=0)
  expected = {
      "pangu final loss": train[-1]["loss"], "pangu val loss": val[-1]["val_loss"], "pangu mfu": train[-1]["mfu"],
      "expert load imbalance layer 0": float(load[0].max() / load[0].mean()),
      "parity max_rel_err": parity["max_rel_err"], "parity passed": parity["passed"],
      "acceptance length": spec["acceptance_length"], "rl success_rate": rl["success_rate"],
      "rl peak_force_n": rl["peak_force_n"], "sim predicted tokens/s": search[0]["tokens_per_s"],
  }
  for key, value in expected.items():
    assert key in table, (key, sorted(table))
    assert _same(table[key], value), (key, table[key], value)
  for png in ("loss.png", "expert_load.png", "parity_layers.png", "rl_curve.png", "rl/episode_strip.png"):
    assert (out / png).exists() and f"({png})" in report
