"""The scripted baseline: the compliance controller alone (no RL), its gains tuned by grid search.

    python -m control_brax.scripted --peg=l_shape --out=results/scripted [--episodes=100] [--eval_episodes=200]

For one geometry: every point of the grid (translational admittance stiffness and
damping, rotational stiffness, desired insertion force) is scored on
`--episodes` episodes of the peg file's evaluation distribution; the best point
(success rate, then lower mean peak force) is re-evaluated on
`--eval_episodes` fresh episodes (other seeds). Writes `<out>/<peg>.json` with the
grid, the best gains and the held-out result. Episodes run on MuJoCo's C engine
(the same task code as MJX; faster for one world at a time on a CPU), split over
processes.
"""

from __future__ import annotations

import itertools
import json
import multiprocessing as mp
import os
import sys
import time
from collections.abc import Callable

import ml_collections
import numpy as np
from absl import flags

import confspec
from control_brax.config import base_env_config

# The documented grid (docs/control_brax.md): 3 x 3 x 3 x 3 = 81 points.
GRID = {
    "k_trans": (150.0, 400.0, 1000.0),  # N/m
    "zeta": (0.7, 1.5, 3.0),  # damping ratio of each axis, D = 2 zeta sqrt(M K)
    "k_rot": (1.0, 4.0, 16.0),  # N m/rad
    "force": (2.0, 5.0, 10.0),  # N, desired insertion force
}


def gains(env: ml_collections.ConfigDict, k_trans: float, zeta: float, k_rot: float, force: float):
  """`env` with admittance gains set from one grid point (M unchanged)."""
  env = ml_collections.ConfigDict(env.to_dict())
  m = env.adm_m
  k = (k_trans,) * 3 + (k_rot,) * 3
  env.adm_k = k
  env.adm_d = tuple(2 * zeta * float(np.sqrt(mi * ki)) for mi, ki in zip(m, k))
  env.desired_force = (0.0, 0.0, force, 0.0, 0.0, 0.0)
  return env


def run_episodes(env: ml_collections.ConfigDict, episodes: int, seed: int,
                 policy: Callable[[np.ndarray], np.ndarray] | None = None) -> dict:
  """Episodes on the C engine; per-episode success, insertion time and peak force."""
  from control_brax.gym_env import PegInHoleGymEnv  # noqa: PLC0415 - spawned workers import lazily

  gym_env = PegInHoleGymEnv(env)
  zero = np.zeros(gym_env.action_space.shape, np.float32)
  out = {"success": [], "time_s": [], "peak_force_n": [], "steps": 0}
  for ep in range(episodes):
    obs, _ = gym_env.reset(seed=seed * 100003 + ep)
    while True:
      action = zero if policy is None else policy(obs)
      obs, _, terminated, truncated, info = gym_env.step(action)
      out["steps"] += 1
      if terminated or truncated:
        break
    out["success"].append(bool(info["success"]))
    out["time_s"].append(gym_env.t * gym_env.task_spec.dt)
    out["peak_force_n"].append(info["peak_force"])
  return out


def summarize(res: dict) -> dict:
  """docs/contracts.md keys: success_rate, mean_insertion_time_s (successes only), peak_force_n (mean of peaks)."""
  s = np.asarray(res["success"])
  t = np.asarray(res["time_s"])
  f = np.asarray(res["peak_force_n"])
  return {"success_rate": float(s.mean()), "mean_insertion_time_s": float(t[s].mean()) if s.any() else None,
          "peak_force_n": float(f.mean()), "max_peak_force_n": float(f.max()), "episodes": int(len(s))}


def _point(args):
  env_dict, point, episodes, seed = args
  env = gains(ml_collections.ConfigDict(env_dict), **point)
  return point, summarize(run_episodes(env, episodes, seed))


def grid_search(peg: str, episodes: int = 100, eval_episodes: int = 200, workers: int = 2, env=None,
                grid: dict | None = None, log=print) -> dict:
  """Tunes the admittance gains for `peg`; returns the grid's scores, the best point and its held-out score."""
  env = ml_collections.ConfigDict((env or base_env_config()).to_dict())
  env.peg = peg
  grid = grid or GRID
  points = [dict(zip(grid, values)) for values in itertools.product(*grid.values())]
  t0 = time.time()
  results = []
  with mp.get_context("spawn").Pool(workers) as pool:
    for i, (point, summary) in enumerate(pool.imap(_point, [(env.to_dict(), p, episodes, 1) for p in points])):
      results.append({"gains": point, **summary})
      log(f"[{peg}] {i + 1}/{len(points)} {point} success {summary['success_rate']:.2f} "
          f"({time.time() - t0:.0f} s)")
    best = max(results, key=lambda r: (r["success_rate"], -r["peak_force_n"]))
    # held out: other seeds, split across workers
    per = [eval_episodes // workers + (i < eval_episodes % workers) for i in range(workers)]
    chunks = pool.map(_chunk, [(env.to_dict(), best["gains"], n, 1000 + i) for i, n in enumerate(per)])
  merged = {k: sum((c[k] for c in chunks), []) for k in ("success", "time_s", "peak_force_n")}
  held_out = summarize(merged)
  log(f"[{peg}] best {best['gains']}: search {best['success_rate']:.2f}, held out {held_out['success_rate']:.3f} "
      f"over {held_out['episodes']} episodes")
  return {"peg": peg, "grid": grid, "search_episodes": episodes, "results": results, "best_gains": best["gains"],
          "search_success_rate": best["success_rate"], "held_out": held_out, "wall_s": time.time() - t0}


def _chunk(args):
  env_dict, point, n, seed = args
  return run_episodes(gains(ml_collections.ConfigDict(env_dict), **point), n, seed)


def main(argv):
  del argv
  os.makedirs(_OUT.value, exist_ok=True)
  for peg in _PEG.value.split(","):
    res = grid_search(peg, _EPISODES.value, _EVAL_EPISODES.value, _WORKERS.value)
    path = os.path.join(_OUT.value, f"{peg}.json")
    with open(path, "w") as fh:
      json.dump(res, fh, indent=1)
    print(json.dumps({"peg": peg, "best_gains": res["best_gains"], **res["held_out"]}))
  sys.stdout.flush()


if __name__ == "__main__":
  # Flags exist only when this module runs as a binary (confspec: how a binary is written).
  _PEG = flags.DEFINE_string("peg", "l_shape", "peg file name(s), comma-separated")
  _OUT = flags.DEFINE_string("out", "results/scripted", "output directory")
  _EPISODES = flags.DEFINE_integer("episodes", 100, "episodes per grid point")
  _EVAL_EPISODES = flags.DEFINE_integer("eval_episodes", 200, "held-out episodes for the best point")
  _WORKERS = flags.DEFINE_integer("workers", 2, "processes")
  confspec.run(main)
