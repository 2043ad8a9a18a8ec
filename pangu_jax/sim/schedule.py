"""Pipeline schedules: closed forms for the step time and bubble, and an event simulation for pictures and
tests.

1F1B (vpp = 1): m micro-batches over p stages take (m + p - 1) (t_f + t_b) with per-stage times t_f, t_b; the
bubble share is (p - 1) / (m + p - 1). Interleaved (Megatron's virtual stages, vpp = v): each stage holds v
chunks of 1/v the work; the ramp shrinks to (p - 1)/v stage-times: step = (m + (p - 1)/v)(t_f + t_b), bubble
share (p - 1) / (v m + p - 1). The event simulation below runs the actual per-stage task order and dependency
rules and reproduces these closed forms when every stage takes the same time (tests/pangu_jax/test_sim.py).
Stages differ (the embedding, the MTP block and the head sit on some stages only): then `predict` runs the
simulation with each stage's own chunk times, since the closed form on the slowest stage would run the ramp at its
pace too.
"""

from __future__ import annotations

import functools


def bubble_fraction(p: int, m: int, v: int = 1) -> float:
  return (p - 1) / (v * m + p - 1)


def pipeline_time(p: int, m: int, v: int, t_f: float, t_b: float) -> float:
  """Step time of m micro-batches; t_f, t_b: one micro-batch's forward / backward time on one stage (all its
  chunks together)."""
  return (m + (p - 1) / v) * (t_f + t_b)


def stage_order(p: int, m: int, v: int, rank: int) -> list:
  """Megatron's task order on `rank`: [("F"|"B", microbatch, chunk), ...]."""
  total = m * v

  def chunk_of(i, forward):
    c = (i % (p * v)) // p
    return c if forward else v - 1 - c

  def mb_of(i):
    return (i // (p * v)) * p + i % p

  if v == 1:
    warm = min(p - rank - 1, m)
  else:
    warm = min((p - rank - 1) * 2 + (v - 1) * p, total)
  order, f, b = [], 0, 0
  for _ in range(warm):
    order.append(("F", mb_of(f), chunk_of(f, True)))
    f += 1
  while f < total:
    order.append(("F", mb_of(f), chunk_of(f, True)))
    f += 1
    order.append(("B", mb_of(b), chunk_of(b, False)))
    b += 1
  while b < total:
    order.append(("B", mb_of(b), chunk_of(b, False)))
    b += 1
  return order


def chunk_times(p: int, v: int, t) -> list:
  """A p x v table of per-chunk times from `t`: a per-stage total (float; each chunk takes 1/v of it) or already
  a table `t[stage][chunk]` (stages whose chunks hold different layers, pangu_jax.sim.pipeline_placement)."""
  if isinstance(t, (int, float)):
    return [[float(t) / v] * v for _ in range(p)]
  rows = [list(map(float, row)) for row in t]
  if len(rows) != p or any(len(row) != v for row in rows):
    raise ValueError(f"chunk times: need a {p} x {v} table (stages x chunks), got {len(rows)} rows")
  return rows


@functools.lru_cache(maxsize=256)
def _task_graph(p: int, m: int, v: int) -> tuple:
  """Every task of the schedule in an order that respects both each stage's own order and the dependencies:
  ((stage, kind, mb, chunk, dependency index or -1), ...). The times are then one longest-path pass."""
  if v > 1 and m % p:
    raise ValueError("interleaved schedule needs microbatches % pp == 0")
  orders = [stage_order(p, m, v, r) for r in range(p)]
  pos = [0] * p
  index = {}
  tasks = []
  remaining = sum(len(o) for o in orders)
  while remaining:
    progressed = False
    for r in range(p):
      while pos[r] < len(orders[r]):
        kind, mb, c = orders[r][pos[r]]
        if kind == "F":
          dep = (("F", mb, c, r - 1) if r > 0 else (("F", mb, c - 1, p - 1) if c > 0 else None))
        elif r < p - 1:
          dep = ("B", mb, c, r + 1)
        elif c < v - 1:
          dep = ("B", mb, c + 1, 0)
        else:
          dep = ("F", mb, c, r)
        if dep is not None and dep not in index:
          break
        index[(kind, mb, c, r)] = len(tasks)
        tasks.append((r, kind, mb, c, -1 if dep is None else index[dep]))
        pos[r] += 1
        remaining -= 1
        progressed = True
    if not progressed:
      raise RuntimeError("pipeline schedule deadlocked")
  return tuple(tasks)


def simulate(p: int, m: int, v: int, t_f, t_b, t_comm: float = 0.0) -> dict:
  """Event simulation of Megatron's schedule (each stage runs its task order as soon as dependencies allow).
  t_f, t_b: per-stage forward / backward time of one micro-batch (float; each chunk takes 1/v of it) or a
  p x v table of per-chunk times. t_comm is added to every dependency that crosses stages. Returns
  {"time", "events": [(stage, kind, mb, chunk, start, end)]}. Needs m % p == 0 when v > 1 (Megatron's rule)."""
  cf, cb = chunk_times(p, v, t_f), chunk_times(p, v, t_b)
  tasks = _task_graph(p, m, v)
  free = [0.0] * p
  ends = [0.0] * len(tasks)
  events = []
  for i, (r, kind, mb, c, dep) in enumerate(tasks):
    ready = 0.0 if dep < 0 else ends[dep] + (t_comm if tasks[dep][0] != r else 0.0)
    start = max(free[r], ready)
    end = start + (cf[r][c] if kind == "F" else cb[r][c])
    free[r] = ends[i] = end
    events.append((r, kind, mb, c, start, end))
  return {"time": max(free), "events": events}


def inflight_chunks(p: int, m: int, v: int) -> int:
  """Micro-batch chunks whose activations stage 0 holds at its peak (warm-up forwards + 1)."""
  if v == 1:
    return min(p, m)
  return min((p - 1) * 2 + (v - 1) * p + 1, m * v)
