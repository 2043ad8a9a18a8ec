"""One run per working directory: an exclusive lock that a killed run cannot leave stuck.

A trainer takes `WorkdirLock(workdir)` before it writes anything there. The lock is
`fcntl.flock` on `workdir/.lock`: the kernel releases it when the holding process
exits for any reason (kill -9 included), so there is nothing to clean up by hand.
The file holds the holder's pid, host and start time; a second trainer on the same
workdir stops at once with one line naming them (`confspec.RunError`, exit code 2).
Readers (generate, export, evaluate) take no lock.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time

from confspec import RunError
from runkit.atomic import make_dir


class WorkdirLock:
  """Context manager (or `acquire`/`release`) holding `workdir/.lock` exclusively."""

  def __init__(self, workdir: str, what: str = "run"):
    self.path = os.path.join(workdir, ".lock")
    self.what = what
    self._fd = None

  def acquire(self) -> WorkdirLock:
    make_dir(os.path.dirname(self.path), "--workdir")
    try:
      fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:  # a read-only directory or file system
      raise RunError(f"--workdir: cannot write {self.path} ({e.strerror or e})") from None
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      try:
        holder = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
      except ValueError:
        holder = {}
      os.close(fd)
      who = (f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}, {holder.get('what', 'a run')} started "
             f"{holder.get('started', '?')}")
      raise RunError(f"{os.path.dirname(self.path)} is in use by another run ({who}); wait for it or use another "
                     "workdir") from None
    info = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "what": self.what,
                       "started": time.strftime("%Y-%m-%d %H:%M:%S")})
    os.ftruncate(fd, 0)
    os.pwrite(fd, info.encode(), 0)
    self._fd = fd
    return self

  def release(self) -> None:
    if self._fd is not None:
      fcntl.flock(self._fd, fcntl.LOCK_UN)
      os.close(self._fd)
      self._fd = None

  def __enter__(self) -> WorkdirLock:
    return self.acquire()

  def __exit__(self, *exc) -> None:
    self.release()
