"""PPO + compliance on the square peg over its evaluation distribution."""

from control_brax.rl.config import base_rl_config


def get_config():
  c = base_rl_config("ppo")
  c.env.peg = "square"
  c.train.total_env_steps = 1_000_000
  c.train.eval_every_steps = 40_960
  return c
