"""Assembly env throughput: MJX batched (1, 256, 1024 worlds), the C-engine backend (`env.backend=mujoco`) against
raw `mujoco.rollout` stepping of the same worlds on the same threads, and MuJoCo's C engine through gymnasium.

Same model (l_shape peg, default env config), random actions in [-1, 1], episodes
auto-reset. MJX: Brax's training wrappers (vmap + episode + auto-reset) around our
env, a `lax.scan` of policy steps under one jit, best of N after compilation. C
engine: our gymnasium adapter, one process per core (2 here), steps summed.
Policy steps/s and physics substeps/s (policy steps x substeps) for each; then
the MJX speed levers at the best batch (solver iterations, all contact pairs
instead of pruned ones, fewer substeps with a softer contact).

C-engine backend: the same Brax-wrapped scan with `env.backend=mujoco` (one host call per policy step for the
batch); raw: `CEngine.rollout` alone (substeps of every world at a fixed command, no JAX, no task code), same
worlds, same threads. Last line: JSON with mjx_steps_per_s (best batch, default settings),
mujoco_c_steps_per_s (both cores, gymnasium), ratio (mjx / C), cengine_steps_per_s, raw_rollout_steps_per_s,
cengine_vs_raw (the issue's >= 0.9 target), cengine_vs_mjx, and the per-batch and per-lever figures.
Usage: python benchmarks/assembly_env.py [--steps=40] [--c_steps=20000] [--peg=l_shape] [--cengine_batch=256]
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import control_brax.mujoco_setup  # noqa: E402, F401, I001 (first: MuJoCo without its warp notices)
import jax  # noqa: E402
from absl import flags  # noqa: E402
from brax.envs.wrappers import training as brax_wrappers  # noqa: E402
from timing import best_time  # noqa: E402

import confspec  # noqa: E402
from control_brax.config import base_env_config  # noqa: E402
from control_brax.envs import PegInHoleEnv  # noqa: E402


def mjx_rate(env_cfg, batch: int, steps: int, repeats: int = 2, backend: str = "mjx", keep_env: bool = False) -> dict:
  env_cfg = env_cfg.copy_and_resolve_references()
  env_cfg.backend = backend
  env = PegInHoleEnv(env_cfg)
  wrapped = brax_wrappers.wrap(env, episode_length=env.spec.episode_steps)
  state = jax.jit(wrapped.reset)(jax.random.split(jax.random.PRNGKey(0), batch))

  @jax.jit
  def run(state, key):
    def body(s, k):
      a = jax.random.uniform(k, (batch, env.action_size), minval=-1.0, maxval=1.0)
      return wrapped.step(s, a), None

    return jax.lax.scan(body, state, jax.random.split(key, steps))[0]

  t0 = time.perf_counter()
  jax.block_until_ready(run(state, jax.random.PRNGKey(1)))
  compile_s = time.perf_counter() - t0
  t = best_time(lambda: jax.block_until_ready(run(state, jax.random.PRNGKey(2))), repeats)
  rate = batch * steps / t
  out = {"batch": batch, "policy_steps_per_s": rate, "physics_steps_per_s": rate * env.spec.substeps,
         "first_call_s": compile_s}
  if keep_env:  # the env and one more timed call's closure, for cengine_rates
    out.update(env=env, run=lambda: jax.block_until_ready(run(state, jax.random.PRNGKey(2))))
  return out


def _c_worker(args):
  import numpy as np  # noqa: PLC0415

  from control_brax.gym_env import PegInHoleGymEnv  # noqa: PLC0415

  env_dict, steps, seed = args
  import ml_collections  # noqa: PLC0415

  env = PegInHoleGymEnv(ml_collections.ConfigDict(env_dict))
  rng = np.random.default_rng(seed)
  env.reset(seed=seed)
  t0 = time.perf_counter()
  for _ in range(steps):
    _, _, term, trunc, _ = env.step(rng.uniform(-1, 1, env.action_space.shape))
    if term or trunc:
      env.reset()
  return steps, time.perf_counter() - t0, env.task_spec.substeps


def c_rate(env_cfg, steps: int, workers: int) -> dict:
  with mp.get_context("spawn").Pool(workers) as pool:
    res = pool.map(_c_worker, [(env_cfg.to_dict(), steps, i) for i in range(workers)])
  rate = sum(s / t for s, t, _ in res)
  return {"workers": workers, "policy_steps_per_s": rate, "physics_steps_per_s": rate * res[0][2]}


def cengine_rates(env_cfg, batch: int, steps: int, repeats: int = 2) -> tuple[dict, dict]:
  """The C-engine backend in the Brax-wrapped scan, and raw `mujoco.rollout` of exactly the calls it made.

  The backend's host calls of one scan are recorded (initial states, commands, friction, clearance), then
  replayed through `CEngine.rollout` alone (no JAX, no task code, no sensor post-processing): the same worlds
  and physics on the same threads.
  """
  env_cfg = env_cfg.copy_and_resolve_references()
  env_cfg.backend = "mujoco"
  ce = mjx_rate(env_cfg, batch, steps, repeats, backend="mujoco", keep_env=True)
  engine = ce.pop("env").engine
  engine.record = []
  ce.pop("run")()
  calls, engine.record = engine.record, None
  t = best_time(lambda: [engine.rollout(*c) for c in calls], repeats)
  rate = batch * len(calls) / t
  raw = {"batch": batch, "threads": engine.threads, "policy_steps_per_s": rate,
         "physics_steps_per_s": rate * engine.substeps, "calls": len(calls)}
  return ce, raw


def main(argv):
  del argv
  cfg = base_env_config()
  cfg.peg = _PEG.value

  cb = _CENGINE_BATCH.value
  ce, raw = cengine_rates(cfg, cb, _STEPS.value)
  print(json.dumps({"engine": "cengine", **ce}), flush=True)
  print(json.dumps({"engine": "raw_rollout", **raw}), flush=True)
  c2 = c_rate(cfg, _C_STEPS.value, 2)
  print(json.dumps({"engine": "mujoco_c", **c2}), flush=True)
  c1 = c_rate(cfg, _C_STEPS.value, 1)
  print(json.dumps({"engine": "mujoco_c", **c1}), flush=True)
  batches = []
  for b in (1, 256, 1024):
    r = mjx_rate(cfg, b, _STEPS.value if b > 1 else 200)
    batches.append(r)
    print(json.dumps({"engine": "mjx", **r}), flush=True)
  best = max(batches, key=lambda r: r["policy_steps_per_s"])

  levers = {}
  variants = {
      "iterations_4": dict(solver_iterations=4, ls_iterations=4),
      "all_pairs": dict(prune_margin=0.0),
      "substeps_5_solref_4ms": dict(substeps=5, solref_timeconst=0.004),
  }
  for name, over in variants.items():
    v = base_env_config()
    v.peg = _PEG.value
    v.update(over)
    v.backend = "mjx"
    r = mjx_rate(v, best["batch"], _STEPS.value)
    levers[name] = {"settings": over, "policy_steps_per_s": r["policy_steps_per_s"],
                    "physics_steps_per_s": r["physics_steps_per_s"],
                    "ratio_vs_c": r["policy_steps_per_s"] / c2["policy_steps_per_s"]}
    print(json.dumps({"engine": "mjx", "lever": name, **levers[name]}), flush=True)

  print(json.dumps({
      "mjx_steps_per_s": best["policy_steps_per_s"], "mjx_physics_steps_per_s": best["physics_steps_per_s"],
      "mjx_best_batch": best["batch"], "mujoco_c_steps_per_s": c2["policy_steps_per_s"],
      "mujoco_c_physics_steps_per_s": c2["physics_steps_per_s"], "mujoco_c_one_core_steps_per_s":
      c1["policy_steps_per_s"], "ratio": best["policy_steps_per_s"] / c2["policy_steps_per_s"],
      "cengine_steps_per_s": ce["policy_steps_per_s"], "cengine_batch": cb, "cengine_threads": raw["threads"],
      "raw_rollout_steps_per_s": raw["policy_steps_per_s"],
      "cengine_vs_raw": ce["policy_steps_per_s"] / raw["policy_steps_per_s"],
      "cengine_vs_mjx": ce["policy_steps_per_s"] / best["policy_steps_per_s"],
      "mjx_batches": {str(r["batch"]): r["policy_steps_per_s"] for r in batches}, "levers": levers,
      "peg": _PEG.value, "devices": str(jax.devices()[0])}))


if __name__ == "__main__":
  # Flags exist only when this module runs as a binary (confspec: how a binary is written).
  _STEPS = flags.DEFINE_integer("steps", 40, "Policy steps per timed MJX call.")
  _C_STEPS = flags.DEFINE_integer("c_steps", 20000, "Policy steps per C-engine process.")
  _PEG = flags.DEFINE_string("peg", "l_shape", "Peg file name.")
  _CENGINE_BATCH = flags.DEFINE_integer("cengine_batch", 256, "Worlds of the C-engine backend and raw rollout.")
  confspec.run(main)
