"""Checkpoints with orbax: atomic, keep the last K, verified on restore, fall back when corrupt.

Atomicity is orbax's: a step is written into a temporary directory and renamed
into place when complete, so a kill -9 mid-write leaves no step directory that
`all_steps()` lists. On top of that we store a SHA-256 of every array in the
step's JSON metadata and recompute it on restore: a truncated or altered file
(disk trouble, a partial copy) is detected even where the storage format would
not notice, reported in one line, and the previous step is used instead.

Saved per step: the train state pytree (params, optimiser state, step, skip
counters) and JSON metadata (the checksum, the config). The data position and
the RNG need no saving: both are pure functions of (seed, step).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils


def tree_checksum(tree) -> str:
  h = hashlib.sha256()
  for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
    if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:  # multi-host: every process sees it all
      leaf = multihost_utils.process_allgather(leaf, tiled=True)
    arr = np.asarray(leaf)
    h.update(jax.tree_util.keystr(path).encode())
    h.update(str(arr.dtype).encode() + str(arr.shape).encode())
    h.update(np.ascontiguousarray(arr).tobytes())
  return h.hexdigest()


class CorruptCheckpoint(RuntimeError):
  pass


class Checkpointer:
  """Save / restore train states under `directory` (one subdirectory per step)."""

  def __init__(self, directory: str, keep: int, async_save: bool = True, log=None):
    self.directory = os.path.abspath(directory)
    self.log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, enable_async_checkpointing=async_save),
    )

  def save(self, step: int, state, meta: dict) -> bool:
    """Starts saving `step`; returns False (and says so) if orbax declined (e.g. the step already exists)."""
    meta = dict(meta, checksum=tree_checksum(state), step=int(step))
    saved = self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                            meta=ocp.args.JsonSave(meta)))
    if not saved:
      self.log(f"checkpoint step {step} was not written (steps present: {self.steps()})")
    return bool(saved)

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  def _restore(self, step: int, abstract_state):
    try:
      out = self.manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state),
                                                                meta=ocp.args.JsonRestore()))
    except Exception as e:  # noqa: BLE001 (any failure to read a step means the step is unusable)
      first = str(e).splitlines()[0][:160] if str(e) else ""
      raise CorruptCheckpoint(f"unreadable ({type(e).__name__}: {first})") from e
    if out.meta.get("checksum") != tree_checksum(out.state):
      raise CorruptCheckpoint("checksum mismatch")
    return out.state, out.meta

  def read_meta(self, step: int) -> dict:
    """The JSON metadata of `step` alone (e.g. to learn the state's structure before restoring it)."""
    return dict(self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta)

  def restore_latest(self, abstract_state):
    """(step, state, meta) of the newest intact checkpoint, or None. Corrupt ones are reported and skipped."""
    for step in reversed(self.steps()):
      try:
        state, meta = self._restore(step, abstract_state)
        return step, state, meta
      except CorruptCheckpoint as e:
        older = [s for s in self.steps() if s < step]
        self.log(f"checkpoint step {step} in {self.directory} is corrupt ({e}); "
                 f"{'falling back to step ' + str(older[-1]) if older else 'no older checkpoint: starting fresh'}")
        self.manager.delete(step)  # else orbax would refuse to save this step (or any earlier one) again
    return None

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


def load_params_for_inference(workdir: str):
  """(cfg, params) from a training workdir: its config.json and its latest intact checkpoint."""
  from pangu_jax.config import validate_config, with_defaults  # noqa: PLC0415
  from pangu_jax.train.state import inference_train_state  # noqa: PLC0415

  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"--workdir: {workdir} has no config.json (not a pangu_jax.train workdir)")
  with open(path) as f:
    cfg = validate_config(with_defaults(json.load(f)))
  ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), keep=cfg.train.keep_checkpoints, async_save=False)
  got = ckpt.restore_latest(inference_train_state(cfg))
  ckpt.close()
  if got is None:
    raise FileNotFoundError(f"--workdir: no intact checkpoint under {workdir}/checkpoints")
  return cfg, got[1]["params"]
