"""Functional RL for the assembly envs: PPO and DDPG/TD3 under one jit per iteration, PEAD, LCRL networks."""
