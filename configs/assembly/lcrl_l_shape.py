"""PPO + compliance with an LCRL local-connection policy on the l_shape peg (docs/control_brax_cs3_lcrl.md).

The connection graph is CS3's on the same env section:
    python -m experiments.cs3 --config=configs/assembly/ppo_l_shape.py --out=results/cs3_l_shape
    python -m control_brax.train --config=configs/assembly/lcrl_l_shape.py --workdir=runs/lcrl_l_shape
Run from the repository root (the graph path is relative to it).
"""

from control_brax.rl.config import base_rl_config


def get_config():
  c = base_rl_config("ppo")
  c.env.peg = "l_shape"
  c.ppo.lcrl_graph = "results/cs3_l_shape/connection_graph.json"
  c.train.total_env_steps = 1_000_000
  c.train.eval_every_steps = 40_960
  return c
