"""Run infrastructure shared by every package: checkpoints, metrics, config files, atomic writes, seed statistics.

`pangu_jax`, `npu_backend` and `control_brax` all run long jobs in a working directory that a kill must not
damage. What they need for that lives here, in one place, with no dependency on any of them:

  runkit.atomic      atomic file writes (temporary file in the same directory, then `os.replace`)
  runkit.configfile  `get_config()` of a Python config file by path, with one-line errors
  runkit.checkpoint  orbax checkpoints with SHA-256 verification and fallback to an older intact step
  runkit.metrics     `metrics.jsonl` (+ TensorBoard) writing and reading, truncated correctly on resume
  runkit.stats       seed-level confidence intervals (through `scipy.stats.bootstrap`)

Importing `runkit` imports nothing heavy: each module imports what it needs (JAX and orbax only in
`runkit.checkpoint`), so the torch-only runtime of `npu_backend` can use `runkit.atomic` without JAX.
"""
