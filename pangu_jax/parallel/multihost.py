"""Multi-host start-up: `jax.distributed.initialize` from flags, with the CPU collectives it needs.

On a cluster every process runs the same command with its own `--process_id`; the devices of all processes form
one global mesh, batches are built identically on every process (a batch is a pure function of (seed, step))
and each process places only its own shards (`runtime.put_batch`). Only process 0 writes metrics and config; the
checkpoint is written by orbax from all processes into the one shared directory.

On CPU, cross-process collectives need `jax_cpu_collectives_implementation = "gloo"` (set here before start-up);
seen working here with two processes on localhost.
"""

from __future__ import annotations

import jax

from confspec import ConfigError


def initialize(coordinator_address: str, num_processes: int, process_id: int, cpu_collectives: str = "gloo") -> None:
  """Joins the job (no-op for a single process). Clear errors for inconsistent flags."""
  if num_processes <= 1:
    return
  if not coordinator_address:
    raise ConfigError("--coordinator_address: required with --num_processes > 1 (host:port of process 0)")
  if not 0 <= process_id < num_processes:
    raise ConfigError(f"--process_id: {process_id} is out of range; allowed: 0..{num_processes - 1}")
  if cpu_collectives:
    jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
  jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                             process_id=process_id)


def is_primary() -> bool:
  return jax.process_index() == 0
