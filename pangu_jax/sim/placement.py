"""Which layers each pipeline chunk holds, and every alternative placement of the padding.

The paper pads 61 layers + the MTP block to 64 slots with no-op layers so that pp x vpp = 32 chunks hold 2 slots
each; where its no-op slots go is not published. Our placement (`place`): layers in order fill the chunks slot by
slot, the padding at the end, the embedding on chunk 0 and the head on the last chunk. `pad_placements` lists
every other way to distribute the padding (layers still in order) so that a report can time them all: in the
paper's setting the end placement gives the shortest simulated pipeline of all 528 (results/sim, docs/simulator.md),
although it does not give the smallest slowest stage; the schedule, not the stage sum, decides.
"""

from __future__ import annotations

import itertools


def layer_kinds(m) -> list:
  """The main layers in order, then the MTP block(s)."""
  return ["dense"] * m.num_dense_layers + ["moe"] * (m.num_layers - m.num_dense_layers) + ["mtp"] * m.mtp_depth


def slots_per_chunk(n_layers: int, chunks: int) -> int:
  return max(-(-n_layers // chunks), 1)


def even_counts(n_layers: int, chunks: int) -> list:
  """Layers per chunk when they fill the chunks slot by slot (padding at the end)."""
  slots = slots_per_chunk(n_layers, chunks)
  return [max(0, min(slots, n_layers - i * slots)) for i in range(chunks)]


def pad_placements(n_layers: int, chunks: int):
  """Every layers-per-chunk list with at most `slots` per chunk that holds all layers in order."""
  slots = slots_per_chunk(n_layers, chunks)
  pads = chunks * slots - n_layers
  for where in itertools.combinations_with_replacement(range(chunks), pads):
    counts = [slots] * chunks
    for c in where:
      counts[c] -= 1
    if min(counts) >= 0:
      yield counts


def chunks_from_counts(kinds: list, counts: list) -> list:
  """Per-chunk kind lists: layers in order, embedding on chunk 0, head on the last chunk."""
  out, at = [], 0
  for n in counts:
    out.append(list(kinds[at:at + n]))
    at += n
  if at != len(kinds):
    raise ValueError(f"placement: {at} of {len(kinds)} layers placed")
  out[0] = ["embed"] + out[0]
  out[-1] = out[-1] + ["head"]
  return out


def place(m, plan) -> list:
  """Per-chunk kind lists of our placement (pp x vpp chunks, chunk c on stage c % pp)."""
  kinds = layer_kinds(m)
  return chunks_from_counts(kinds, even_counts(len(kinds), plan.pp * plan.vpp))


def stages_of(chunk_kinds: list, pp: int) -> list:
  """Layer kinds of each stage (the union of its chunks)."""
  stages = [[] for _ in range(pp)]
  for i, ck in enumerate(chunk_kinds):
    stages[i % pp].extend(ck)
  return stages
