"""Collective communication times.

Public hardware: ring/pairwise formulas over the link the group's traffic crosses. A group inside one node
uses the intra-node link; a group spanning nodes is limited by each device's inter-node link for the share of
its traffic that leaves the node. Calibrated hardware (simulated CPU devices) carries a measured
`collective_table` {kind: [latency_s, bytes_per_s]}: time = latency + bytes_per_device / rate.

Hierarchical EP all-to-all (the paper's): a token crosses the slow link once per distinct remote node among its
k experts (all-gather in the outer group), then an intra-node all-to-all delivers it to the expert's device.
Flat: every (token, expert) pair whose device is on another node crosses the slow link.
"""

from __future__ import annotations

from pangu_jax.sim.hardware import collective_table


def _nodes(n: int, dpn: int) -> int:
  return max(1, -(-n // dpn))


def _link(hw, n, spread_nodes=True):
  """(bytes/s, latency) of the bottleneck link of a group of n devices (consecutive ranks packed in nodes)."""
  if n <= hw.devices_per_node or not spread_nodes:
    return hw.intra_bw * hw.comm_eff, hw.intra_latency_s
  return hw.inter_bw * hw.comm_eff, hw.inter_latency_s


def _measured(hw, kind, n, per_device_bytes):
  table = collective_table(hw)
  if kind in table and n > 1:
    lat, rate = table[kind]
    return lat + per_device_bytes / rate
  return None


def _ring(hw, kind: str, n: int, total_bytes: float, across_nodes: bool | None) -> float:
  """A ring all-gather or reduce-scatter of a `total_bytes` tensor (gathered size / input size) over n devices:
  the measured table when calibrated, else n-1 steps of latency plus (n-1)/n of the bytes over the bottleneck."""
  if n <= 1 or total_bytes <= 0:
    return 0.0
  m = _measured(hw, kind, n, total_bytes / n)
  if m is not None:
    return m
  bw, lat = _link(hw, n, across_nodes if across_nodes is not None else True)
  return (n - 1) * lat + total_bytes * (n - 1) / n / bw


def all_gather(hw, n: int, out_bytes: float, across_nodes: bool | None = None) -> float:
  """Gather a tensor of `out_bytes` (the gathered size) over n devices."""
  return _ring(hw, "all_gather", n, out_bytes, across_nodes)


def reduce_scatter(hw, n: int, in_bytes: float, across_nodes: bool | None = None) -> float:
  """Reduce-scatter a tensor of `in_bytes` (the unreduced size) over n devices."""
  return _ring(hw, "reduce_scatter", n, in_bytes, across_nodes)


def all_reduce(hw, n: int, nbytes: float, across_nodes: bool | None = None) -> float:
  if n <= 1 or nbytes <= 0:
    return 0.0
  m = _measured(hw, "all_reduce", n, nbytes)
  if m is not None:
    return m
  return reduce_scatter(hw, n, nbytes, across_nodes) + all_gather(hw, n, nbytes, across_nodes)


def p2p(hw, nbytes: float, across_nodes: bool = True) -> float:
  if nbytes <= 0:
    return 0.0
  m = _measured(hw, "ppermute", 2, nbytes)
  if m is not None:
    return m
  bw, lat = (hw.inter_bw * hw.comm_eff, hw.inter_latency_s) if across_nodes else (hw.intra_bw * hw.comm_eff,
                                                                                   hw.intra_latency_s)
  return lat + nbytes / bw


def expected_remote_nodes(k: int, nodes: int) -> float:
  """Expected distinct remote nodes among k uniformly placed experts (with replacement; our approximation)."""
  if nodes <= 1:
    return 0.0
  return (nodes - 1) * (1.0 - (1.0 - 1.0 / nodes) ** k)


def ep_all_to_all(hw, group: int, tokens: int, k: int, width_bytes: float, hierarchical: bool) -> float:
  """One dispatch (or combine) all-to-all of `tokens` local tokens, each sent to k experts spread uniformly over
  `group` devices; `width_bytes` per token row."""
  if group <= 1 or tokens <= 0:
    return 0.0
  per_device = tokens * k * width_bytes
  m = _measured(hw, "all_to_all", group, per_device)
  if m is not None:
    return m
  dpn = hw.devices_per_node
  nodes = _nodes(group, dpn)
  in_node = min(group, dpn)
  intra_bw, intra_lat = hw.intra_bw * hw.comm_eff, hw.intra_latency_s
  inter_bw, inter_lat = hw.inter_bw * hw.comm_eff, hw.inter_latency_s
  # share of (token, expert) pairs leaving this device but staying in the node, and leaving the node
  off_dev_in_node = (in_node - 1) / group
  off_node = (group - in_node) / group
  if nodes == 1:
    return intra_lat + per_device * off_dev_in_node / intra_bw
  if not hierarchical:
    inter = inter_lat + per_device * off_node / inter_bw
    intra = intra_lat + per_device * off_dev_in_node / intra_bw
    return max(inter, intra)  # both links carry traffic at once
  remote = expected_remote_nodes(k, nodes)
  inter = inter_lat + tokens * remote * width_bytes / inter_bw
  intra = intra_lat + per_device * (1 - 1 / in_node) / intra_bw  # second hop: deliver inside the node
  return inter + intra
