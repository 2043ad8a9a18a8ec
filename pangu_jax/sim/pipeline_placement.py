"""Which layers each pipeline chunk holds, and every alternative placement of the padding.

The paper pads 61 layers + the MTP block to 64 slots with no-op layers so that pp x vpp = 32 chunks hold 2 slots
each; where its no-op slots go is not published. Our placement (`place`): layers in order (the decoder layers,
then the MTP block, which so sits in the last chunk with the output head, where Megatron-Core puts it), spread
as evenly as possible with the extra ones in the first chunks, so the padding lands in the last chunks: in the
paper's setting one no-op slot in each of chunks 30 and 31. No chunk is left empty while another holds two more
layers. The embedding is on chunk 0. `pad_placements` lists every other way to distribute the padding (layers
still in order) so that the report can time them all: the pipeline time depends strongly on whether the last
chunk carries a no-op slot (docs/simulator.md, "Where the padding goes").
"""

from __future__ import annotations

import itertools


def layer_kinds(m) -> list:
  """The main layers in order, then the MTP block(s)."""
  return ["dense"] * m.num_dense_layers + ["moe"] * (m.num_layers - m.num_dense_layers) + ["mtp"] * m.mtp_depth


def slots_per_chunk(n_layers: int, chunks: int) -> int:
  return max(-(-n_layers // chunks), 1)


def default_counts(n_layers: int, chunks: int) -> list:
  """Layers per chunk of our placement: as even as possible, the first n_layers % chunks chunks one more."""
  base, extra = divmod(n_layers, chunks)
  return [base + (1 if i < extra else 0) for i in range(chunks)]


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
  return chunks_from_counts(kinds, default_counts(len(kinds), plan.pp * plan.vpp))


def stages_of(chunk_kinds: list, pp: int) -> list:
  """Layer kinds of each stage (the union of its chunks)."""
  stages = [[] for _ in range(pp)]
  for i, ck in enumerate(chunk_kinds):
    stages[i % pp].extend(ck)
  return stages
