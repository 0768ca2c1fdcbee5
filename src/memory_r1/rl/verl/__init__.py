"""The scale-out path: the paper's recipes on GPU clusters through verl (Ray, FSDP, vLLM rollouts).

An adapter, never a second copy: the rows come from the datasets `memory-r1 data build-*` writes, the
rewards call the local trainer's own environments (`rl.envs`), parsers and metrics, so a reward computed
under verl equals the local trainer's on the same output.

- `export`: dataset folders -> verl parquet rows (`data_source`, chat `prompt`, `ability`,
  `reward_model.ground_truth`, `extra_info`), train and validation files.
- `rewards`: `compute_score(data_source, solution_str, ground_truth, extra_info, ...)`, the function
  verl's reward manager calls (`reward.custom_reward_function.path/name`).
- `presets`: Hydra overrides of `verl.trainer.main_ppo` for the paper's settings, and the launch line.

Nothing here imports verl at module level, and nothing in the core imports this package: `memory-r1`
works without verl installed; `pip install memory-r1[verl]` adds it.
"""
