"""`python -m experiments.cs3 --config=F --out=DIR [--json]`: CS3 connection graph of an assembly env, to files.

F is an RL config (configs/assembly/*.py); `control_brax.cs3.estimate` computes the
scores. Writes DIR/connection_graph.json (`scores`, `stderr`, `graph` as action rows
x state columns, names, the thresholds, the convergence history; the file LCRL's
`lcrl_graph` reads) and heat maps DIR/connection_graph.png and DIR/cs3_convergence.png;
`--json` prints `scores`, `stderr`, `graph` (and names) as one JSON object on the last line.
"""

from __future__ import annotations

import json
import os

import numpy as np
from absl import flags
from ml_collections import config_flags

import confspec
from control_brax.cs3 import estimate
from runkit.atomic import atomic_write_json


def run(cfg, out: str, progress: bool = True) -> dict:
  """Estimates CS3 on the config's env, writes the graph files, returns the JSON-able result."""
  result = estimate(cfg, progress=progress)
  os.makedirs(out, exist_ok=True)
  atomic_write_json(os.path.join(out, "connection_graph.json"), result, indent=1)
  result["plots"] = plot(result, out)
  return result


def plot(result: dict, out: str) -> list[str]:
  """Heat map of the scores (each state column scaled by its max, edges outlined) and the convergence plot."""
  import matplotlib  # noqa: PLC0415

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # noqa: PLC0415
  import matplotlib.ticker  # noqa: PLC0415

  phi, se, graph = (np.asarray(result[k], float) for k in ("scores", "stderr", "graph"))
  col = np.where(phi.max(0) > 0, phi.max(0), 1.0)
  rel = phi / col
  fig, ax = plt.subplots(figsize=(0.6 * phi.shape[1] + 2.5, 0.5 * phi.shape[0] + 1.8))
  im = ax.imshow(rel, cmap="viridis", vmin=0, vmax=1)
  for i in range(phi.shape[0]):
    for j in range(phi.shape[1]):
      ax.text(j, i, f"{rel[i, j]:.2f}", ha="center", va="center", fontsize=6,
              color="k" if rel[i, j] > 0.6 else "w")
      if graph[i, j]:
        ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, ec="red", lw=1.5))
  ax.set_xticks(range(phi.shape[1]), result["states"], fontsize=8)
  ax.set_yticks(range(phi.shape[0]), result["actions"], fontsize=8)
  ax.set_xlabel("state component")
  ax.set_ylabel("action component")
  ax.set_title(f"CS3 on {result.get('peg', '?')} (phi / column max; red = edge)", fontsize=9)
  fig.colorbar(im, ax=ax, fraction=0.03)
  fig.tight_layout()
  p1 = os.path.join(out, "connection_graph.png")
  fig.savefig(p1, dpi=110)
  plt.close(fig)
  hist = result["history"]
  n = np.array([h["samples"] for h in hist])
  est = np.array([h["phi"] for h in hist])  # (rounds, a, s)
  err = np.array([h["stderr"] for h in hist])
  fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.5))
  a, s = phi.shape
  for i in range(a):
    for j in range(s):
      a1.plot(n, est[:, i, j] / col[j], lw=0.8, color="tab:red" if graph[i, j] else "tab:gray",
              alpha=0.9 if graph[i, j] else 0.4)
  a1.set_xscale("log")
  a1.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
  a1.set_xlabel("samples")
  a1.set_ylabel("phi / final column max")
  a1.set_title("estimates as samples grow (red: edges)", fontsize=9)
  rel_err = (err / col[None, None, :]).reshape(len(n), -1)
  a2.loglog(n, np.median(rel_err, axis=1), label="median stderr / column max")
  a2.loglog(n, rel_err.max(axis=1), label="max")
  a2.loglog(n, np.median(rel_err[0]) * np.sqrt(n[0] / n), "k--", lw=0.8, label="1/sqrt(samples)")
  a2.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
  a2.set_xlabel("samples")
  a2.set_title("standard error relative to the column's largest phi", fontsize=9)
  a2.legend(fontsize=8)
  fig.tight_layout()
  p2 = os.path.join(out, "cs3_convergence.png")
  fig.savefig(p2, dpi=100)
  plt.close(fig)
  return [p1, p2]


def main(argv):
  del argv
  res = run(_CONFIG.value, _OUT.value, progress=_PROGRESS.value)
  edges = int(np.sum(res["graph"]))
  print(f"CS3 on {res['peg']}: {edges} edges of {len(res['actions']) * len(res['states'])}, "
        f"{res['samples']} samples, {res['wall_s']:.0f} s -> {_OUT.value}/connection_graph.json")
  if _JSON.value:
    print(json.dumps({k: res[k] for k in ("scores", "stderr", "graph", "actions", "states", "samples")}))


if __name__ == "__main__":
  # Flags exist only when this module runs as a binary (confspec: how a binary is written).
  _CONFIG = config_flags.DEFINE_config_file("config", None, "RL config file (its env and cs3 sections are used).")
  _OUT = flags.DEFINE_string("out", None, "Output directory.")
  _JSON = flags.DEFINE_bool("json", False, "Print one JSON object as the last stdout line.")
  _PROGRESS = flags.DEFINE_bool("progress", True, "Show a progress bar.")
  flags.mark_flags_as_required(["config", "out"])
  confspec.run(main)
