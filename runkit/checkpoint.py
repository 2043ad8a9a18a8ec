"""Checkpoints with orbax: atomic, keep the last K, verified on restore, fall back when corrupt.

Atomicity is orbax's: a step is written into a temporary directory and renamed
into place when complete, so a kill -9 mid-write leaves no step directory that
`all_steps()` lists. On top of that we store a SHA-256 of every array in the
step's JSON metadata and recompute it on restore: a truncated or altered file
(disk trouble, a partial copy) is detected even where the storage format would
not notice, reported in one line, and the previous step is used instead.

Saved per step: a state pytree and JSON metadata (the checksum, and whatever
the caller adds: the config, the PEAD stage, ...). The LLM trainer saves its
train state as a tree restored into its shardings; the RL trainer's state holds
zero-size arrays (MJX data has them, orbax refuses them), so it uses
`flat=True`: only the non-empty leaves are stored, as a list, and restored into
the caller's abstract structure as uncommitted arrays (jit keys its compiled
programs on committedness, so committed restored leaves would make a resumed run
recompile an MJX rollout that nothing about changed).
"""

from __future__ import annotations

import hashlib
import os
import sys

import jax
import jax.numpy as jnp
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


def pack(state) -> list:
  """The state's non-empty leaves as a list (what `flat=True` stores)."""
  return [x for x in jax.tree.leaves(state) if x.size]


def unpack(leaves, abstract):
  """Inverse of `pack` given the state's abstract structure; leaves come back uncommitted to a device."""
  it = iter(leaves)
  flat, treedef = jax.tree.flatten(abstract)
  return jax.tree.unflatten(treedef, [jnp.zeros(a.shape, a.dtype) if not a.size else jnp.asarray(np.asarray(next(it)))
                                      for a in flat])


class Checkpointer:
  """Save / restore states under `directory` (one subdirectory per step); `flat`: see the module docstring."""

  def __init__(self, directory: str, keep: int, async_save: bool = True, log=None, flat: bool = False):
    self.directory = os.path.abspath(directory)
    self.flat = flat
    self.log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, enable_async_checkpointing=async_save),
    )

  def save(self, step: int, state, meta: dict) -> bool:
    """Starts saving `step`; returns False (and says so) if orbax declined (e.g. the step already exists)."""
    if self.flat:
      state = pack(state)
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
        if self.flat:
          leaves, meta = self._restore(step, pack(abstract_state))
          return step, unpack(leaves, abstract_state), meta
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

