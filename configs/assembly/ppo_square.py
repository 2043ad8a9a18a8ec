"""PPO + compliance on the square peg over its evaluation distribution."""

from control_brax.rl.config import base_rl_config


def get_config():
  return base_rl_config("ppo", {
      "env.peg": "square",
      "train.total_env_steps": 1_000_000,
      "train.eval_every_steps": 40_960,
  })
