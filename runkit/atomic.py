"""Atomic file writes: a reader (or a kill -9) sees the old file or the new one, never half of one.

The data goes to a temporary file in the destination's directory (same file system, so the rename is atomic),
is flushed and fsynced, and is renamed over the destination with `os.replace`. A failure before the rename
removes the temporary file and leaves the destination untouched.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Iterator

from confspec import RunError


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
  """Yields a temporary path next to `path`; on a clean exit the file written there replaces `path`.

  For writers that want a path rather than a file object (e.g. `safetensors.torch.save_file`).
  """
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  # Not mkstemp: its files are private (0600); this one gets the usual permissions of a new file.
  tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
  try:
    yield tmp
    with open(tmp, "rb+") as f:
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(OSError):
      os.remove(tmp)
    raise


def atomic_write(path: str, data: str | bytes) -> str:
  """Writes `data` (text or bytes) to `path` atomically; returns `path`."""
  with atomic_path(path) as tmp, open(tmp, "wb" if isinstance(data, bytes) else "w") as f:
    f.write(data)
  return path


def atomic_write_json(path: str, obj, **dump_kwargs) -> None:
  """`json.dump(obj)` to `path` atomically (keyword arguments go to `json.dumps`)."""
  atomic_write(path, json.dumps(obj, **dump_kwargs))


def make_dir(path: str, what: str = "directory") -> str:
  """`os.makedirs(path, exist_ok=True)`, or one line (`confspec.RunError`, exit 2 in a binary) naming `what` (the
  flag) when it cannot be: a file in the way, a parent that is a file, no permission, a read-only file system."""
  try:
    os.makedirs(path, exist_ok=True)
  except FileExistsError:
    raise RunError(f"{what}: {path} exists and is not a directory") from None
  except OSError as e:
    raise RunError(f"{what}: cannot create {path} ({e.strerror or e})") from None
  return path
