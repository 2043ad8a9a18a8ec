"""Metrics to `workdir/metrics.jsonl` (one JSON object per line) and to TensorBoard (`workdir/tb`)."""

from __future__ import annotations

import json
import math
import os

import numpy as np

from runkit.atomic import atomic_write


def _plain(v):
  if isinstance(v, np.ndarray | np.generic):
    v = v.tolist()
  if isinstance(v, float) and not math.isfinite(v):
    return None if math.isnan(v) else (1e308 if v > 0 else -1e308)
  if isinstance(v, list):
    return [_plain(x) for x in v]
  return v


class MetricsWriter:
  """Appends lines to metrics.jsonl; on resume first drops lines past the restored step (so a resumed run's
  file equals an uninterrupted run's)."""

  def __init__(self, workdir: str, resume_step: int, tensorboard: bool = True):
    self.path = os.path.join(workdir, "metrics.jsonl")
    if os.path.exists(self.path):
      keep = []
      with open(self.path) as f:
        for line in f:
          try:
            rec = json.loads(line)
          except ValueError:
            continue  # a line cut by a kill
          if rec.get("step", 0) <= resume_step:
            keep.append(json.dumps(rec))
      atomic_write(self.path, "".join(k + "\n" for k in keep))
    self.file = open(self.path, "a")
    self.tb = None
    if tensorboard:
      from runkit.torch_guard import guard_torch_import, say_skipped_backends  # noqa: PLC0415

      guard_torch_import()  # tensorboardX imports torch: a broken torch_npu must not break it
      say_skipped_backends()
      from tensorboardX import SummaryWriter  # noqa: PLC0415

      self.tb = SummaryWriter(os.path.join(workdir, "tb"))

  def write(self, record: dict) -> None:
    rec = {k: _plain(v) for k, v in record.items()}
    self.file.write(json.dumps(rec) + "\n")
    self.file.flush()
    if self.tb is not None:
      step = rec.get("step", 0)
      for k, v in rec.items():
        if k == "step":
          continue
        if isinstance(v, int | float) and not isinstance(v, bool):
          self.tb.add_scalar(k, v, step)
        elif isinstance(v, list) and v and all(isinstance(x, int | float) for x in v):
          for i, x in enumerate(v):
            self.tb.add_scalar(f"{k}/{i}", x, step)

  def close(self) -> None:
    self.file.close()
    if self.tb is not None:
      self.tb.close()


def read_jsonl(path: str, missing_ok: bool = False) -> list[dict]:
  """The JSON objects of a JSON-lines file, one per line. Lines that are not JSON objects (a binary's plain
  progress output captured in the same file, a line cut by a kill) are skipped; a missing file is [] when
  `missing_ok`."""
  if missing_ok and not os.path.exists(path):
    return []
  out = []
  with open(path) as f:
    for line in f:
      if not line.strip().startswith("{"):
        continue
      try:
        out.append(json.loads(line))
      except ValueError:
        continue
  return out


def read_metrics(workdir: str) -> list[dict]:
  """The records of `workdir/metrics.jsonl`."""
  return read_jsonl(os.path.join(workdir, "metrics.jsonl"))
