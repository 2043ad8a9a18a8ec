"""SAC (automatic temperature) + compliance on the L-shaped peg over its evaluation distribution."""

from control_brax.rl.config import base_rl_config


def get_config():
  return base_rl_config("sac", {
      "env.peg": "l_shape",
      "train.total_env_steps": 300_000,
      "train.eval_every_steps": 20_480,
  })
