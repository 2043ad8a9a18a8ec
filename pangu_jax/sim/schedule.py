"""Pipeline schedules: closed forms for the step time and bubble, and an event simulation for pictures and
tests.

1F1B (vpp = 1): m micro-batches over p stages take (m + p - 1) (t_f + t_b) with per-stage times t_f, t_b; the
bubble share is (p - 1) / (m + p - 1). Interleaved (Megatron's virtual stages, vpp = v): each stage holds v
chunks of 1/v the work; the ramp shrinks to (p - 1)/v stage-times: step = (m + (p - 1)/v)(t_f + t_b), bubble
share (p - 1) / (v m + p - 1). The event simulation below runs the actual per-stage task order and dependency
rules and reproduces these closed forms (tests/test_sim.py), so the closed form is what `predict` uses.
"""

from __future__ import annotations


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


def simulate(p: int, m: int, v: int, t_f: float, t_b: float, t_comm: float = 0.0) -> dict:
  """Event simulation; t_f, t_b are per stage (all chunks) and each chunk takes 1/v of them. Returns
  {"time", "events": [(stage, kind, mb, chunk, start, end)]}. Needs m % p == 0 when v > 1 (Megatron's rule)."""
  if v > 1 and m % p:
    raise ValueError("interleaved schedule needs microbatches % pp == 0")
  cf, cb = t_f / v, t_b / v
  orders = [stage_order(p, m, v, r) for r in range(p)]
  pos = [0] * p
  free = [0.0] * p
  done = {}
  events = []
  remaining = sum(len(o) for o in orders)
  while remaining:
    progressed = False
    for r in range(p):
      while pos[r] < len(orders[r]):
        kind, mb, c = orders[r][pos[r]]
        if kind == "F":
          dep = (("F", mb, c, r - 1) if r > 0 else (("F", mb, c - 1, p - 1) if c > 0 else None))
        else:
          if r < p - 1:
            dep = ("B", mb, c, r + 1)
          elif c < v - 1:
            dep = ("B", mb, c + 1, 0)
          else:
            dep = ("F", mb, c, r)
        if dep is not None and dep not in done:
          break
        ready = 0.0 if dep is None else done[dep] + (t_comm if dep[3] != r else 0.0)
        start = max(free[r], ready)
        end = start + (cf if kind == "F" else cb)
        free[r] = end
        done[(kind, mb, c, r)] = end
        events.append((r, kind, mb, c, start, end))
        pos[r] += 1
        remaining -= 1
        progressed = True
    if not progressed:
      raise RuntimeError("pipeline schedule deadlocked")
  return {"time": max(free), "events": events}


def inflight_chunks(p: int, m: int, v: int) -> int:
  """Micro-batch chunks whose activations stage 0 holds at its peak (warm-up forwards + 1)."""
  if v == 1:
    return min(p, m)
  return min((p - 1) * 2 + (v - 1) * p + 1, m * v)
