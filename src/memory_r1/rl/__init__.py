"""Reinforcement learning for the two agents (paper section 2): shared pieces in `core`, one module per
algorithm (`grpo`, `ppo`), each readable top to bottom: config, advantage, loss, update step."""
