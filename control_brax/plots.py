"""Plots of a training workdir (matplotlib, imported only when a plot is drawn)."""

from __future__ import annotations

import os

import numpy as np

from runkit.metrics import read_metrics


def learning_curve(workdir: str) -> str | None:
  """D/learning_curve.png from D/metrics.jsonl's evaluation lines (per-seed success and the mean); its path, or
  None when matplotlib is missing or there are no evaluation lines."""
  try:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415
  except ImportError:
    return None
  evals = [r for r in read_metrics(workdir) if "eval_success_rate" in r]
  if not evals:
    return None
  x = np.array([r["env_steps"] for r in evals])
  fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.5))
  per_seed = np.array([r.get("eval_success_rate_per_seed", [r["eval_success_rate"]]) for r in evals])
  for s in range(per_seed.shape[1]):
    a1.plot(x, per_seed[:, s], lw=0.8, alpha=0.6)
  a1.plot(x, per_seed.mean(1), color="k", lw=2, label="mean over seeds")
  a1.set_xlabel("env steps per seed")
  a1.set_ylabel("eval success rate")
  a1.set_ylim(-0.02, 1.02)
  a1.legend(fontsize=8)
  a2.plot(x, [r["eval_return"] for r in evals], color="tab:green")
  a2.set_xlabel("env steps per seed")
  a2.set_ylabel("eval return")
  for r0, r1 in zip(evals[:-1], evals[1:]):
    if r1.get("stage", 0) != r0.get("stage", 0):
      for a in (a1, a2):
        a.axvline(r1["env_steps"], ls="--", color="gray", lw=0.8)
  fig.tight_layout()
  path = os.path.join(workdir, "learning_curve.png")
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path
