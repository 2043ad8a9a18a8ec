"""SAC (automatic temperature) + compliance on the L-shaped peg over its evaluation distribution.

Settings from the declared three-seed comparison in docs/control_brax.md ("SAC settings on l_shape"): one
update per env step (16 worlds x 4 steps per iteration, 64 updates), warm-up 2,048 env steps; median 30,720 env
steps to 90% evaluation success (the schema's 0.125 updates per env step: 133,120).
"""

from control_brax.rl.config import base_rl_config


def get_config():
  return base_rl_config("sac", {
      "env.peg": "l_shape",
      "sac.num_envs": 16,
      "sac.steps_per_iteration": 4,
      "sac.updates_per_iteration": 64,
      "sac.warmup_steps": 2048,
      "train.total_env_steps": 300_000,
      "train.eval_every_steps": 20_480,
  })
