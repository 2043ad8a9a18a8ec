"""Our RL (JAX; the C-engine backend on a CPU) against Stable-Baselines3's PPO and SAC (C engine via our gymnasium
adapter) on `l_shape`, several seeds each, resumable.

Target: 90% success over the evaluation distribution (256 episodes for ours, 100 for SB3, deterministic
policies), evaluated every --eval_every env steps. Figures per run: training wall time from the start
(compilation included, evaluation time excluded on both sides) to the first evaluation at or above the target,
and the env steps it took; a run that misses the target within --max_steps / --max_wall_s reports its budget
(a lower bound, in the competitor's favour when it is theirs). SB3 runs its usual CPU setup: `SubprocVecEnv` with
one process per core (2 here), `MlpPolicy`, its default hyperparameters (PPO: n_steps 1024 per env; SAC: all
defaults) with our discount; torch threads = 1 per process. Ours: `--config` (default
`configs/assembly/ppo_l_shape.py`; `--config.a.b=v` overrides are recorded in the output). Installs:
`pip install -e '.[bench]'` (stable-baselines3).

Each finished run is appended to `--out` (JSON lines) and skipped when the script runs again, so a killed run
costs only the run in progress. Last line: JSON with the medians over seeds of ours_wall_s, ours_env_steps and,
per SB3 algorithm, sb3_<algo>_wall_s, sb3_<algo>_env_steps, wall_ratio_vs_<algo> and steps_ratio_vs_<algo>
(SB3 / ours: > 1 means ours is faster / needs fewer steps), the per-run figures, and whether every run reached the
target.
Usage: python benchmarks/rl_vs_sb3.py [--seeds=3] [--sb3_algos=ppo,sac] [--target=0.9] [--out=FILE.jsonl]
"""

from __future__ import annotations

import json
import os
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
from absl import flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

import confspec  # noqa: E402
from control_brax.envs import PegInHoleEnv  # noqa: E402
from control_brax.rl import rollout  # noqa: E402
from control_brax.rl.config import validate_rl  # noqa: E402


def ours(cfg, seed: int, target: float, max_steps: int, max_wall: float, eval_every: int) -> dict:
  from control_brax.train import make_algo  # noqa: PLC0415

  env = PegInHoleEnv(cfg.env)
  algo = make_algo(cfg, env)
  t0, eval_s = time.perf_counter(), 0.0
  ts = jax.jit(algo.init)(jax.random.PRNGKey(seed))
  step = jax.jit(algo.iteration)
  evaluate = jax.jit(lambda p, s, k: rollout.evaluate(env, lambda o: algo.act(p, s, o), k, 256))
  next_eval, curve = eval_every, []
  while True:
    ts, _ = step(ts)
    steps = int(ts.env_steps)
    if steps >= next_eval:
      next_eval += eval_every
      e0 = time.perf_counter()
      succ = float(evaluate(ts.params, ts.obs_stats, jax.random.PRNGKey(10_000 + steps))["success_rate"])
      eval_s += time.perf_counter() - e0
      curve.append((steps, succ, time.perf_counter() - t0 - eval_s))
      print(json.dumps({"who": "ours", "seed": seed, "env_steps": steps, "success": succ, "wall_s": curve[-1][2]}),
            flush=True)
      if succ >= target or steps >= max_steps or curve[-1][2] >= max_wall:
        break
  return {"wall_s": curve[-1][2], "env_steps": curve[-1][0], "reached": curve[-1][1] >= target, "curve": curve,
          "backend": env.backend, "algo": cfg.algo}


def _make_env(env_dict):
  def thunk():
    import ml_collections  # noqa: PLC0415
    import torch  # noqa: PLC0415

    from control_brax.gym_env import PegInHoleGymEnv  # noqa: PLC0415

    torch.set_num_threads(1)
    return PegInHoleGymEnv(ml_collections.ConfigDict(env_dict))

  return thunk


def sb3(cfg, algo: str, seed: int, target: float, max_steps: int, max_wall: float, eval_every: int,
        n_envs: int = 2) -> dict:
  import torch  # noqa: PLC0415
  from stable_baselines3 import PPO, SAC  # noqa: PLC0415
  from stable_baselines3.common.callbacks import BaseCallback  # noqa: PLC0415
  from stable_baselines3.common.vec_env import SubprocVecEnv  # noqa: PLC0415

  from control_brax.gym_env import PegInHoleGymEnv  # noqa: PLC0415

  torch.set_num_threads(1)
  env_dict = cfg.env.to_dict()
  eval_env = PegInHoleGymEnv(cfg.env)
  curve, t0, clock = [], time.perf_counter(), {"eval_s": 0.0}

  def success_rate(model, episodes=100):
    wins = 0
    for ep in range(episodes):
      obs, _ = eval_env.reset(seed=10_000 + ep)
      while True:
        action, _ = model.predict(obs, deterministic=True)
        obs, _, term, trunc, info = eval_env.step(action)
        if term or trunc:
          break
      wins += info["success"]
    return wins / episodes

  class Evaluate(BaseCallback):
    def __init__(self):
      super().__init__()
      self.next = eval_every

    def _on_step(self) -> bool:
      if self.num_timesteps < self.next:
        return True
      self.next += eval_every
      e0 = time.perf_counter()
      succ = success_rate(self.model)
      clock["eval_s"] += time.perf_counter() - e0
      curve.append((self.num_timesteps, succ, time.perf_counter() - t0 - clock["eval_s"]))
      print(json.dumps({"who": f"sb3_{algo}", "seed": seed, "env_steps": self.num_timesteps, "success": succ,
                        "wall_s": curve[-1][2]}), flush=True)
      return succ < target and curve[-1][2] < max_wall

  venv = SubprocVecEnv([_make_env(env_dict) for _ in range(n_envs)], start_method="spawn")
  if algo == "ppo":
    model = PPO("MlpPolicy", venv, n_steps=1024, gamma=cfg.ppo.gamma, seed=seed, device="cpu", verbose=0)
  else:
    model = SAC("MlpPolicy", venv, gamma=cfg.ppo.gamma, seed=seed, device="cpu", verbose=0)
  model.learn(total_timesteps=max_steps, callback=Evaluate())
  venv.close()
  if not curve:
    return {"wall_s": time.perf_counter() - t0, "env_steps": max_steps, "reached": False, "curve": curve}
  return {"wall_s": curve[-1][2], "env_steps": curve[-1][0], "reached": curve[-1][1] >= target, "curve": curve}


def _done_runs(path: str, setup: dict) -> dict:
  """Finished runs of this setup already in `path`: {(who, seed): run}."""
  done = {}
  if os.path.exists(path):
    with open(path) as f:
      for line in f:
        row = json.loads(line)
        if row.get("kind") == "run" and row.get("setup") == setup:
          done[(row["who"], row["seed"])] = row
  return done


def main(argv):
  del argv
  import statistics  # noqa: PLC0415
  import sys  # noqa: PLC0415

  cfg = validate_rl(_CONFIG.value)
  overrides = [a for a in sys.argv[1:] if a.startswith("--config.")]
  budget = dict(target=_TARGET.value, max_steps=_MAX_STEPS.value, max_wall=_MAX_WALL_S.value,
                eval_every=_EVAL_EVERY.value)
  import hashlib  # noqa: PLC0415

  config_id = hashlib.sha1(json.dumps(cfg.to_dict(), sort_keys=True, default=str).encode()).hexdigest()[:12]
  setup = {"config_sha1": config_id, "peg": cfg.env.peg, "algo": cfg.algo, "overrides": overrides, **budget}
  algos = [a for a in _SB3_ALGOS.value.split(",") if a]
  for a in algos:
    if a not in ("ppo", "sac"):
      raise confspec.RunError(f"--sb3_algos: {a!r}; allowed: ppo, sac")
  done = _done_runs(_OUT.value, setup)
  os.makedirs(os.path.dirname(os.path.abspath(_OUT.value)), exist_ok=True)
  for seed in range(_SEEDS.value):
    for who in ["ours", *(f"sb3_{a}" for a in algos)]:
      if (who, seed) in done:
        print(json.dumps({"skipped": who, "seed": seed, "reason": f"already in {_OUT.value}"}), flush=True)
        continue
      r = ours(cfg, seed, **budget) if who == "ours" else sb3(cfg, who[4:], seed, **budget)
      row = {"kind": "run", "who": who, "seed": seed, "setup": setup, **r}
      with open(_OUT.value, "a") as f:
        f.write(json.dumps(row) + "\n")
      done[(who, seed)] = row
  med = lambda who, key: statistics.median(done[(who, s)][key] for s in range(_SEEDS.value))  # noqa: E731
  out = {"peg": cfg.env.peg, "target_success": _TARGET.value, "seeds": _SEEDS.value, "ours_algo": cfg.algo,
         "ours_backend": done[("ours", 0)].get("backend"), "overrides": overrides,
         "ours_wall_s": med("ours", "wall_s"), "ours_env_steps": med("ours", "env_steps")}
  for a in algos:
    w, n = med(f"sb3_{a}", "wall_s"), med(f"sb3_{a}", "env_steps")
    out.update({f"sb3_{a}_wall_s": w, f"sb3_{a}_env_steps": n, f"wall_ratio_vs_{a}": w / out["ours_wall_s"],
                f"steps_ratio_vs_{a}": n / out["ours_env_steps"]})
  out["runs"] = {f"{who}/{s}": [round(r["wall_s"], 1), r["env_steps"], r["reached"]] for (who, s), r in
                 sorted(done.items()) if s < _SEEDS.value}
  out["all_reached"] = all(v[2] for v in out["runs"].values())
  out["note"] = "ratios are SB3 / ours (> 1: ours faster or fewer steps); unreached runs report their budget"
  print(json.dumps(out))


if __name__ == "__main__":
  # Flags exist only when this module runs as a binary (confspec: how a binary is written).
  _TARGET = flags.DEFINE_float("target", 0.9, "Target evaluation success rate.")
  _MAX_STEPS = flags.DEFINE_integer("max_steps", 1_500_000, "Env steps budget per run.", lower_bound=1)
  _MAX_WALL_S = flags.DEFINE_float("max_wall_s", 1500.0, "Training wall-time budget per run (s).")
  _EVAL_EVERY = flags.DEFINE_integer("eval_every", 20_480, "Env steps between evaluations.", lower_bound=1)
  _SEEDS = flags.DEFINE_integer("seeds", 3, "Seeds per trainer.", lower_bound=1)
  _SB3_ALGOS = flags.DEFINE_string("sb3_algos", "ppo,sac", "Stable-Baselines3 algorithms to compare (ppo, sac).")
  _OUT = flags.DEFINE_string("out", "results/benchmarks/rl_vs_sb3_runs.jsonl", "Finished runs (JSON lines).")
  _DEFAULT_CONFIG = os.path.join(os.path.dirname(__file__), "..", "configs", "assembly", "ppo_l_shape.py")
  with confspec.flag_errors():  # a default config applies the --config.a.b=v overrides as it is defined
    _CONFIG = config_flags.DEFINE_config_file("config", _DEFAULT_CONFIG,
                                              "RL config file (overrides as --config.a.b=v).")
  confspec.run(main)
