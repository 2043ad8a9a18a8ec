"""`python -m control_brax.cs3 --config=F --out=DIR [--json]`: CS3 connection graph of an assembly env.

F is an RL config (configs/assembly/*.py); its `env` section defines the system
and its `cs3` section the estimate (samples, batch, state pool, z, tau). Writes
DIR/connection_graph.json (`scores`, `stderr`, `graph` as action rows x state
columns, names, the thresholds, the convergence history) and heat maps
DIR/connection_graph.png and DIR/cs3_convergence.png; `--json` prints `scores`,
`stderr`, `graph` (and names) as one JSON object on the last line.

The estimator is control_brax.shapley's (generic in the batched step function);
this module supplies the env's pieces, our definitions:
* states: a pool of `cs3.pool` env states, each taken at a uniform control step
  in [0, pool_steps) of an episode from the geometry's evaluation distribution
  driven by uniform random actions in +- rollout_action_scale (the compliance
  controller runs underneath), so free-space, contact and jammed states all
  occur in the proportions exploration visits them; worlds that ended earlier
  contribute their last live state;
* probe actions: uniform in [-1, 1] per component (the policy's action range);
  baseline: a zero action (no pose increment, the controller alone);
* state components: the policy's observation after `horizon` control steps
  (F/T and pose error, scaled as the policy sees them).
"""

from __future__ import annotations

import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from control_brax import shapley
from control_brax.config import POSE_AXES, parse_axes, parse_groups

OBS_NAMES = ("Fx", "Fy", "Fz", "Tx", "Ty", "Tz", "ex", "ey", "ez", "erx", "ery", "erz")
VEL_NAMES = ("vx", "vy", "vz", "vrx", "vry", "vrz")


def names(env_cfg) -> tuple[list[str], list[str]]:
  """(action component names, state component names) of an `env` section."""
  dims = parse_axes(env_cfg.action_dims, "env.action_dims")
  groups = parse_groups(env_cfg.action_groups, dims, "env.action_groups")
  acts = ["+".join(POSE_AXES[dims[i]] for i in g) for g in groups]
  if env_cfg.gain_action:
    acts += [f"K_{POSE_AXES[d]}" for d in dims]
  obs = list(OBS_NAMES) + (list(VEL_NAMES) if env_cfg.obs_velocities else [])
  return acts, obs


def collect_states(env, key, n: int, max_steps: int, action_scale: float):
  """n env states, world b's taken at step t_b ~ U{0..max_steps-1} of a random-action episode (see module doc)."""
  k_reset, k_t, k_a = jax.random.split(key, 3)
  state = jax.vmap(env.reset)(jax.random.split(k_reset, n))
  stop = jax.random.randint(k_t, (n,), 0, max_steps)

  def body(carry, xs):
    s, saved, alive = carry
    t, k = xs
    keep = alive & (t <= stop)  # still live and not past its stopping time: this is the latest candidate
    saved = jax.tree.map(lambda a, b: jnp.where(keep.reshape((n,) + (1,) * (a.ndim - 1)), a, b), s, saved)
    a = action_scale * jax.random.uniform(k, (n, env.action_size), minval=-1.0, maxval=1.0)
    nxt = jax.vmap(env.step)(s, a)
    alive = alive & (nxt.done == 0)
    return (nxt, saved, alive), None

  carry = (state, state, jnp.ones(n, bool))
  (_, saved, _), _ = jax.lax.scan(body, carry, (jnp.arange(max_steps), jax.random.split(k_a, max_steps)))
  return saved


def effect_fn(env, horizon: int):
  """Batched (states, actions) -> observation after holding each action for `horizon` control steps."""

  def one(s, a):
    s = jax.lax.fori_loop(0, horizon, lambda _, x: env.step(x, a), s)
    return s.obs

  return jax.vmap(one)


def run(cfg, out: str, progress: bool = True) -> dict:
  """Estimates CS3 on the config's env, writes the graph files, returns the JSON-able result."""
  from control_brax.envs import PegInHoleEnv  # noqa: PLC0415
  from control_brax.rl.config import validate_rl  # noqa: PLC0415

  cfg = validate_rl(ml_collections.ConfigDict(cfg.to_dict() if hasattr(cfg, "to_dict") else cfg))
  c = cfg.cs3
  env = PegInHoleEnv(cfg.env)
  act_names, obs_names = names(cfg.env)
  t0 = time.time()
  key = jax.random.PRNGKey(c.seed)
  k_pool, k_est = jax.random.split(key)
  collect = jax.jit(lambda k: collect_states(env, k, c.pool, c.pool_steps, c.rollout_action_scale))
  pool = collect(k_pool)
  pool_s = time.time() - t0

  def sample_fn(k, batch):
    k_i, k_a = jax.random.split(k)
    idx = jax.random.randint(k_i, (batch,), 0, c.pool)
    states = jax.tree.map(lambda x: x[idx], pool)
    actions = jax.random.uniform(k_a, (batch, env.action_size), minval=-1.0, maxval=1.0)
    return states, actions

  bar = None
  if progress:
    try:
      from tqdm import tqdm  # noqa: PLC0415

      bar = tqdm(total=c.samples, unit="sample", desc=f"CS3 {cfg.env.peg}", file=sys.stderr, dynamic_ncols=True)
    except ImportError:
      bar = None

  def prog(done, total):
    if bar is not None:
      bar.n = min(done * c.batch, c.samples)
      bar.refresh()

  phi, se, history = shapley.estimate(effect_fn(env, c.horizon), sample_fn, env.action_size, k_est, c.samples,
                                      c.batch, progress=prog)
  if bar is not None:
    bar.close()
  graph = shapley.connection_graph(phi, se, c.z, c.tau)
  result = {"scores": phi.tolist(), "stderr": se.tolist(), "graph": graph.tolist(), "actions": act_names,
            "states": obs_names, "peg": cfg.env.peg, "compliance": bool(cfg.env.compliance),
            "rule": {"z": c.z, "tau": c.tau, "text": "edge iff phi > z * stderr and phi > tau * max over the "
                     "action components of phi on the same state component"},
            "samples": int(history[-1]["samples"]), "pool": c.pool, "horizon": c.horizon,
            "wall_s": time.time() - t0, "pool_wall_s": pool_s, "history": history}
  os.makedirs(out, exist_ok=True)
  with open(os.path.join(out, "connection_graph.json"), "w") as f:
    json.dump(result, f, indent=1)
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


if __name__ == "__main__":
  from absl import flags
  from ml_collections import config_flags

  import confspec

  _CONFIG = config_flags.DEFINE_config_file("config", None, "RL config file (its env and cs3 sections are used).")
  _OUT = flags.DEFINE_string("out", None, "Output directory.")
  _JSON = flags.DEFINE_bool("json", False, "Print one JSON object as the last stdout line.")
  _PROGRESS = flags.DEFINE_bool("progress", True, "Show a progress bar.")
  flags.mark_flags_as_required(["config", "out"])

  def main(argv):
    del argv
    res = run(_CONFIG.value, _OUT.value, progress=_PROGRESS.value)
    edges = int(np.sum(res["graph"]))
    print(f"CS3 on {res['peg']}: {edges} edges of {len(res['actions']) * len(res['states'])}, "
          f"{res['samples']} samples, {res['wall_s']:.0f} s -> {_OUT.value}/connection_graph.json")
    if _JSON.value:
      print(json.dumps({k: res[k] for k in ("scores", "stderr", "graph", "actions", "states", "samples")}))

  confspec.run(main)
