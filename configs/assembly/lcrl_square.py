"""PPO + compliance with an LCRL local-connection policy on the square peg (docs/control_brax_cs3_lcrl.md).

The connection graph is CS3's on the same env section:
    python -m experiments.cs3 --config=configs/assembly/ppo_square.py --out=results/cs3_square
    python -m control_brax.train --config=configs/assembly/lcrl_square.py --workdir=runs/lcrl_square
Run from the repository root (the graph path is relative to it).
"""

from control_brax.rl.config import base_rl_config


def get_config():
  c = base_rl_config("ppo")
  c.env.peg = "square"
  c.ppo.lcrl_graph = "results/cs3_square/connection_graph.json"
  c.train.total_env_steps = 1_000_000
  c.train.eval_every_steps = 40_960
  return c
