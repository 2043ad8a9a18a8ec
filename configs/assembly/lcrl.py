"""PPO + compliance with an LCRL local-connection policy (docs/control_brax_cs3_lcrl.md); the peg is the config
argument (`l_shape` when none is given), and the connection graph is CS3's on the same env section:

    python -m experiments.cs3 --config=configs/assembly/ppo_square.py --out=results/cs3_square
    python -m control_brax.train --config=configs/assembly/lcrl.py:square --workdir=runs/lcrl_square

Run from the repository root (the graph path is relative to it).
"""

from control_brax.rl.config import base_rl_config


def get_config(peg: str = "l_shape"):
  return base_rl_config("ppo", {
      "env.peg": peg,
      "ppo.lcrl_graph": f"results/cs3_{peg}/connection_graph.json",
      "train.total_env_steps": 1_000_000,
      "train.eval_every_steps": 40_960,
  })
