"""PPO + compliance on the L-shaped peg over its evaluation distribution (the RL issue's target run).

    python -m control_brax.train --config=configs/assembly/ppo_l_shape.py --workdir=runs/ppo_l_shape
"""

from control_brax.rl.config import base_rl_config


def get_config():
  return base_rl_config("ppo", {
      "env.peg": "l_shape",
      "train.total_env_steps": 1_000_000,
      "train.eval_every_steps": 40_960,
      "train.target_success": 0.95,  # stop once every seed's evaluation success reaches this (0 = run the budget)
  })
