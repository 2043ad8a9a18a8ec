"""DDPG (TD3 options on) + compliance on the L-shaped peg over its evaluation distribution."""

from control_brax.rl.config import base_rl_config


def get_config():
  c = base_rl_config("ddpg")
  c.env.peg = "l_shape"
  c.train.total_env_steps = 300_000
  c.train.eval_every_steps = 20_480
  return c
