"""Our PPO (MJX, JAX) against Stable-Baselines3's PPO (C engine via our gymnasium adapter) on `l_shape`.

Target: 90% success over the evaluation distribution (256 episodes for ours on MJX, 100 for SB3 on the C engine,
deterministic policies), evaluated every ~40k env steps; wall time from the start of training (compilation
included) to the first evaluation at or above the target, and the env steps it took. SB3 runs its usual CPU
setup: `SubprocVecEnv` with one process per core (2 here), `MlpPolicy` (64x64 tanh), its default PPO
hyperparameters except n_steps (1024 per env) and the same discount; torch threads = 1 per process. Ours: the
`configs/assembly/ppo_l_shape.py` settings. Installs: `pip install -e '.[bench]'` (stable-baselines3).

Last line: JSON with ours_wall_s, sb3_wall_s, wall_ratio (sb3 / ours), ours_env_steps, sb3_env_steps,
steps_ratio (sb3 / ours), and whether each reached the target within --max_steps / --max_wall_s.
Usage: python benchmarks/rl_vs_sb3.py [--target=0.9] [--max_steps=1500000] [--max_wall_s=1500]
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
from control_brax.rl import ppo, rollout  # noqa: E402
from control_brax.rl.config import validate_rl  # noqa: E402

EVAL_EVERY = 40_960


def ours(cfg, target: float, max_steps: int, max_wall: float) -> dict:
  env = PegInHoleEnv(cfg.env)
  algo = ppo.make(env, cfg.ppo)
  t0 = time.perf_counter()
  ts = jax.jit(algo.init)(jax.random.PRNGKey(0))
  step = jax.jit(algo.iteration)
  evaluate = jax.jit(lambda p, s, k: rollout.evaluate(env, lambda o: algo.act(p, s, o), k, 256))
  next_eval, curve = EVAL_EVERY, []
  while True:
    ts, _ = step(ts)
    steps = int(ts.env_steps)
    if steps >= next_eval:
      next_eval += EVAL_EVERY
      succ = float(evaluate(ts.params, ts.obs_stats, jax.random.PRNGKey(steps))["success_rate"])
      curve.append((steps, succ, time.perf_counter() - t0))
      print(json.dumps({"who": "ours", "env_steps": steps, "success": succ, "wall_s": curve[-1][2]}), flush=True)
      if succ >= target or steps >= max_steps or curve[-1][2] >= max_wall:
        break
  return {"wall_s": curve[-1][2], "env_steps": curve[-1][0], "reached": curve[-1][1] >= target, "curve": curve}


def _make_env(env_dict):
  def thunk():
    import ml_collections  # noqa: PLC0415
    import torch  # noqa: PLC0415

    from control_brax.gym_env import PegInHoleGymEnv  # noqa: PLC0415

    torch.set_num_threads(1)
    return PegInHoleGymEnv(ml_collections.ConfigDict(env_dict))

  return thunk


def sb3(cfg, target: float, max_steps: int, max_wall: float, n_envs: int = 2) -> dict:
  import torch  # noqa: PLC0415
  from stable_baselines3 import PPO  # noqa: PLC0415
  from stable_baselines3.common.callbacks import BaseCallback  # noqa: PLC0415
  from stable_baselines3.common.vec_env import SubprocVecEnv  # noqa: PLC0415

  from control_brax.gym_env import PegInHoleGymEnv  # noqa: PLC0415

  torch.set_num_threads(1)
  env_dict = cfg.env.to_dict()
  eval_env = PegInHoleGymEnv(cfg.env)
  curve, t0 = [], time.perf_counter()

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
      self.next = EVAL_EVERY

    def _on_step(self) -> bool:
      if self.num_timesteps < self.next:
        return True
      self.next += EVAL_EVERY
      succ = success_rate(self.model)
      curve.append((self.num_timesteps, succ, time.perf_counter() - t0))
      print(json.dumps({"who": "sb3", "env_steps": self.num_timesteps, "success": succ, "wall_s": curve[-1][2]}),
            flush=True)
      return succ < target and curve[-1][2] < max_wall

  venv = SubprocVecEnv([_make_env(env_dict) for _ in range(n_envs)], start_method="spawn")
  model = PPO("MlpPolicy", venv, n_steps=1024, gamma=cfg.ppo.gamma, seed=0, device="cpu", verbose=0)
  model.learn(total_timesteps=max_steps, callback=Evaluate())
  venv.close()
  if not curve:
    return {"wall_s": time.perf_counter() - t0, "env_steps": max_steps, "reached": False, "curve": curve}
  return {"wall_s": curve[-1][2], "env_steps": curve[-1][0], "reached": curve[-1][1] >= target, "curve": curve}


def main(argv):
  del argv
  cfg = validate_rl(_CONFIG.value)
  a = ours(cfg, _TARGET.value, _MAX_STEPS.value, _MAX_WALL_S.value)
  b = sb3(cfg, _TARGET.value, _MAX_STEPS.value, _MAX_WALL_S.value)
  print(json.dumps({"peg": cfg.env.peg, "target_success": _TARGET.value, "ours_wall_s": a["wall_s"],
                    "sb3_wall_s": b["wall_s"], "wall_ratio": b["wall_s"] / a["wall_s"],
                    "ours_env_steps": a["env_steps"], "sb3_env_steps": b["env_steps"],
                    "steps_ratio": b["env_steps"] / a["env_steps"], "ours_reached": a["reached"],
                    "sb3_reached": b["reached"], "ours_final_success": a["curve"][-1][1] if a["curve"] else None,
                    "sb3_final_success": b["curve"][-1][1] if b["curve"] else None,
                    "note": "ratios > 1 mean ours is faster / needs fewer steps; unreached runs report their budget"}))


if __name__ == "__main__":
  # Flags exist only when this module runs as a binary (confspec: how a binary is written).
  _TARGET = flags.DEFINE_float("target", 0.9, "Target evaluation success rate.")
  _MAX_STEPS = flags.DEFINE_integer("max_steps", 1_500_000, "Env steps budget per trainer.", lower_bound=1)
  _MAX_WALL_S = flags.DEFINE_float("max_wall_s", 1500.0, "Wall-time budget per trainer (s).")
  with confspec.flag_errors():  # a default config applies the --config.a.b=v overrides as it is defined
    _CONFIG = config_flags.DEFINE_config_file(
        "config", os.path.join(os.path.dirname(__file__), "..", "configs", "assembly", "ppo_l_shape.py"),
        "RL config file (overrides as --config.a.b=v).")
  confspec.run(main)
