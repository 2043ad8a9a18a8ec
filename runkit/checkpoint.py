"""Checkpoints with orbax: atomic, keep the last K, verified on restore, fall back when corrupt.

Atomicity is orbax's: a step is written into a temporary directory and renamed
into place when complete, so a kill -9 mid-write leaves no step directory that
`all_steps()` lists. On top of that we store a SHA-256 of every array in the
step's JSON metadata and recompute it on restore: a truncated or altered file
(disk trouble, a partial copy) is detected even where the storage format would
not notice, reported in one line, and the previous step is used instead. A corrupt
step is moved aside to `<directory>.quarantine/` by a trainer and skipped by a
read-only reader (generate, export, evaluate): nothing is ever deleted. A step
whose structure (every leaf's path, shape and dtype, saved in its metadata) does
not match what this run's config builds is not corrupt: the run's config changed.
That raises `CheckpointMismatch`, one line naming the first differing weight, and
touches nothing.

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

import contextlib
import hashlib
import os
import shutil
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from confspec import ConfigError


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


@contextlib.contextmanager
def _quiet_absl():
  """absl logging at ERROR for the block: a reader's stderr is its own lines, not orbax's notices."""
  from absl import logging  # noqa: PLC0415

  old = logging.get_verbosity()
  logging.set_verbosity(logging.ERROR)
  try:
    yield
  finally:
    logging.set_verbosity(old)


@jax.jit
def _all_finite(leaves) -> jax.Array:
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))


def all_finite(tree) -> bool:
  """True when every floating-point leaf of `tree` is finite (one jitted reduction): checked before a state is
  saved, so that no checkpoint ever holds NaN or inf parameters."""
  leaves = [x for x in jax.tree.leaves(tree) if hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.inexact)]
  return bool(_all_finite(leaves)) if leaves else True


class CorruptCheckpoint(RuntimeError):
  pass


class CheckpointMismatch(ConfigError):
  """The newest checkpoint holds a state of another structure than this run's config builds (one line)."""


def signature(tree) -> list:
  """[path, shape, dtype] of every leaf (concrete or abstract): what a restore needs to match."""
  return [[jax.tree_util.keystr(path), list(leaf.shape), str(leaf.dtype)]
          for path, leaf in jax.tree_util.tree_leaves_with_path(tree)]


def _first_difference(saved: list, now: list) -> str:
  saved_d, now_d = {p: (s, d) for p, s, d in saved}, {p: (s, d) for p, s, d in now}
  # The model's weights first: a differing optimiser moment only repeats what its parameter says.
  for p, (shape, dtype) in sorted(now_d.items(), key=lambda kv: "['params']" not in kv[0]):
    if p not in saved_d:
      return f"{p} is not in the checkpoint"
    if saved_d[p] != (shape, dtype):
      return f"{p} is {saved_d[p][1]}{tuple(saved_d[p][0])} in the checkpoint, {dtype}{tuple(shape)} now"
  extra = sorted(set(saved_d) - set(now_d))
  return f"{extra[0]} is in the checkpoint but not in this config's state" if extra else "the tree structure differs"


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
  """Save / restore states under `directory` (one subdirectory per step); `flat`: see the module docstring.

  `read_only=True` (generate, export, evaluate, parity): nothing is created, written, moved or deleted; a corrupt
  step is skipped. Otherwise (the trainers) a corrupt step is moved aside to `<directory>.quarantine/` (orbax
  would refuse to save that step again while it exists), never deleted.
  """

  def __init__(self, directory: str, keep: int, async_save: bool = True, log=None, flat: bool = False,
               read_only: bool = False):
    self.directory = os.path.abspath(directory)
    self.flat, self.read_only = flat, read_only
    self.log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    self.manager = None
    if read_only and not os.path.isdir(self.directory):
      return  # nothing to read, and nothing may be created
    with _quiet_absl() if read_only else contextlib.nullcontext():  # orbax warns that read-only is read-only
      options = (ocp.CheckpointManagerOptions(read_only=True, create=False) if read_only else
                 ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, enable_async_checkpointing=async_save))
      self.manager = ocp.CheckpointManager(self.directory, options=options)

  def save(self, step: int, state, meta: dict) -> bool:
    """Starts saving `step`; returns False (and says so) if orbax declined (e.g. the step already exists)."""
    if self.read_only:
      raise RuntimeError("this Checkpointer is read-only")
    sig = signature(state)
    if self.flat:
      state = pack(state)
    meta = dict(meta, checksum=tree_checksum(state), step=int(step), signature=sig)
    saved = self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                            meta=ocp.args.JsonSave(meta)))
    if not saved:
      self.log(f"checkpoint step {step} was not written (steps present: {self.steps()})")
    return bool(saved)

  def wait(self) -> None:
    if self.manager is not None:
      self.manager.wait_until_finished()

  def steps(self) -> list[int]:
    return sorted(self.manager.all_steps()) if self.manager is not None else []

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
    """(step, state, meta) of the newest intact checkpoint, or None when there is none.

    A step whose saved structure (leaf paths, shapes, dtypes) differs from `abstract_state` raises
    `CheckpointMismatch` naming the first difference (and closes this Checkpointer): the run's config changed,
    and nothing is touched.
    A corrupt step (unreadable, checksum mismatch) is reported in one line, quarantined (or, read-only,
    skipped), and the next older step is tried."""
    want = signature(abstract_state)
    for step in reversed(self.steps()):
      try:
        try:
          meta = self.read_meta(step)
        except Exception as e:  # noqa: BLE001 (an unreadable metadata file means an unusable step)
          raise CorruptCheckpoint(f"unreadable metadata ({type(e).__name__})") from e
        if "signature" in meta and meta["signature"] != want:
          self.close()  # the caller cannot go on with this directory; leave no orbax threads behind
          raise CheckpointMismatch(
              f"checkpoint step {step} in {self.directory} does not match this config: "
              f"{_first_difference(meta['signature'], want)}; resume with the config it was trained with, or "
              f"start fresh with a new workdir (or move {self.directory} away)")
        if self.flat:
          leaves, meta = self._restore(step, pack(abstract_state))
          return step, unpack(leaves, abstract_state), meta
        state, meta = self._restore(step, abstract_state)
        return step, state, meta
      except CorruptCheckpoint as e:
        older = [s for s in self.steps() if s < step]
        action = "skipped" if self.read_only else f"moved to {self._quarantine(step)}"
        self.log(f"checkpoint step {step} in {self.directory} is corrupt ({e}; {action}); "
                 f"{'falling back to step ' + str(older[-1]) if older else 'no older checkpoint'}")
    return None

  def _quarantine(self, step: int) -> str:
    """Moves a step's directory aside (never deletes it); returns where it went."""
    src = os.path.join(self.directory, str(step))
    dst = os.path.join(self.directory + ".quarantine", f"{step}.{time.strftime('%Y%m%d-%H%M%S')}")
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    if os.path.exists(src):
      shutil.move(src, dst)
    else:  # a layout orbax names otherwise: let orbax remove its entry, as before
      self.manager.delete(step)
    self.manager.reload()
    return dst

  def close(self) -> None:
    if self.manager is not None:
      self.manager.wait_until_finished()
      self.manager.close()
      self.manager = None

