"""`python -m control_brax.evaluate --config=F --workdir=D [--episodes=N] [--json]`: evaluate a trained agent.

Loads the newest intact checkpoint under D/checkpoints (the run's PEAD stage
included) and runs N episodes (default 256) of the config's environment on MJX
with the deterministic policy (seed 0 of a multi-seed run unless --seed_index).
JSON (docs/contracts.md): success_rate, mean_insertion_time_s (over successes),
peak_force_n (mean of per-episode peak contact force), episodes; plus the mean
return.
"""

from __future__ import annotations

import json
import os

import jax
import ml_collections
import numpy as np
from absl import flags
from ml_collections import config_flags

import confspec
from confspec import ConfigError, RunError
from control_brax.rl import rollout
from control_brax.rl.config import validate_rl
from control_brax.train import get_runner
from runkit.checkpoint import Checkpointer


def load_agent(cfg, workdir: str):
  """(runner, train state) of the newest intact checkpoint in `workdir`."""
  ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), keep=cfg.train.keep_checkpoints, async_save=False,
                      flat=True, read_only=True)
  steps = ckpt.steps()
  if not steps:
    raise RunError(f"--workdir: no checkpoint under {workdir}/checkpoints (train first)")
  stage = int(ckpt.read_meta(steps[-1]).get("stage", 0))
  runner = get_runner(cfg, stage)
  abstract = runner.abstract()
  got = ckpt.restore_latest(abstract)
  ckpt.close()
  if got is None:
    raise RunError(f"--workdir: no intact checkpoint under {workdir}/checkpoints")
  return runner, got[1]


def evaluate(cfg, workdir: str, episodes: int = 256, seed_index: int = 0, key: int = 0) -> dict:
  cfg = validate_rl(ml_collections.ConfigDict(cfg.to_dict()))
  if episodes < 1:
    raise ConfigError(f"--episodes: {episodes} is out of range; allowed: an integer >= 1")
  if not 0 <= seed_index < cfg.train.num_seeds:
    raise ConfigError(f"--seed_index: {seed_index} is out of range; allowed: 0..{cfg.train.num_seeds - 1} "
                      f"(the run has train.num_seeds = {cfg.train.num_seeds})")
  runner, ts = load_agent(cfg, workdir)
  params = jax.tree.map(lambda x: x[seed_index], ts.params)
  stats = jax.tree.map(lambda x: x[seed_index], ts.obs_stats)
  fn = jax.jit(lambda k: rollout.evaluate(runner.env, lambda o: runner.algo.act(params, stats, o), k, episodes))
  ev = jax.device_get(fn(jax.random.PRNGKey(key)))
  t = float(ev["insertion_time_s"])
  return {"success_rate": float(ev["success_rate"]), "mean_insertion_time_s": t if np.isfinite(t) else None,
          "peak_force_n": float(ev["peak_force_n"]), "episodes": int(ev["episodes"]),
          "mean_return": float(ev["return"]), "stage": runner.stage}


def main(argv):
  del argv
  res = evaluate(_CONFIG.value, _WORKDIR.value, _EPISODES.value, _SEED_INDEX.value)
  if _JSON.value:
    print(json.dumps(res))
  else:
    for k, v in res.items():
      print(f"{k}: {v}")


if __name__ == "__main__":
  # Flags exist only when this module runs as a binary (confspec: how a binary is written).
  _CONFIG = config_flags.DEFINE_config_file("config", None, "RL config file the agent was trained with.")
  _WORKDIR = flags.DEFINE_string("workdir", None, "Training workdir with checkpoints/.")
  _EPISODES = flags.DEFINE_integer("episodes", 256, "Evaluation episodes.")
  _SEED_INDEX = flags.DEFINE_integer("seed_index", 0, "Which seed of a multi-seed run.")
  _JSON = flags.DEFINE_bool("json", False, "Print the result as one JSON line.")
  flags.mark_flags_as_required(["config", "workdir"])
  confspec.run(main)
