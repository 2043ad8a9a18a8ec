"""Hardware descriptions: schema, loading from / writing to `configs/hardware/*.py` files.

A hardware file is an ml_collections file whose `get_config()` returns `hardware_config(...)`. Public files
(ascend_a2, h100, h200) give datasheet peaks plus generic efficiency assumptions; a calibrated file
(`simulate --calibrate --out=FILE`) adds measured tables (GEMM rate by shape, collective cost by kind), which
take precedence over the parametric forms. Every number must say where it came from, so the writer emits a
comment beside each field.
"""

from __future__ import annotations

import json
import math
import os

import ml_collections

from confspec import ConfigError, Field, defaults, validate
from runkit.configfile import load_config_file

DTYPE_KEYS = ("bfloat16", "float32")
COLLECTIVES = ("all_reduce", "all_gather", "reduce_scatter", "all_to_all", "ppermute")

SCHEMA = {
    "name": Field(str),
    "gemm_eff_max": Field(float, lo=0, lo_open=True, hi=1, doc="GEMM efficiency for large shapes"),
    "gemm_half_dim": Field(float, lo=0, doc="smallest GEMM dim at which efficiency halves"),
    "attn_eff": Field(float, lo=0, lo_open=True, hi=1, doc="fused attention efficiency"),
    "memory_gb": Field(float, lo=0, lo_open=True),
    "mem_bw": Field(float, lo=0, lo_open=True, doc="bytes/s"),
    "mem_bw_eff": Field(float, lo=0, lo_open=True, hi=1),
    "gather_bw": Field(float, 0.0, lo=0, doc="bytes/s of row gathers (0 = mem_bw * mem_bw_eff)"),
    "mem_reserved_gb": Field(float, lo=0),
    "devices_per_node": Field(int, lo=1),
    "intra_bw": Field(float, lo=0, lo_open=True, doc="bytes/s per device per direction inside a node"),
    "intra_latency_s": Field(float, lo=0),
    "inter_bw": Field(float, lo=0, lo_open=True, doc="bytes/s per device per direction between nodes"),
    "inter_latency_s": Field(float, lo=0),
    "comm_eff": Field(float, lo=0, lo_open=True, hi=1),
    "offload_bw": Field(float, lo=0, lo_open=True, doc="host link bytes/s"),
    "op_overhead_s": Field(float, lo=0, doc="fixed cost per kernel"),
    "step_overhead_s": Field(float, 0.0, lo=0, doc="fixed host cost per training step"),
    "host_shared_compute": Field(bool, False, doc="devices share one host's cores (simulated CPU devices)"),
    "overlap_eff": Field(float, 0.8, lo=0, hi=1, doc="share of overlappable communication actually hidden"),
    "source": Field(str, "public figures", doc="how the numbers were obtained"),
    "probe_s": Field(float, 0.0, lo=0, doc="calibration-time speed probe (calibrate.speed_probe), 0 = none"),
    "residual_s_per_byte": Field(float, 0.0, lo=0, doc="extra backward seconds per byte of activations a layer saves "
                                 "for it (XLA:CPU's scanned residuals; 0 = none)"),
    "recompute_ratio": Field(float, 1.0, lo=0, lo_open=True, hi=2,
                             doc="recomputation's cost as a fraction of the forward it repeats"),
    "fp8_peak": Field(float, 0.0, lo=0, doc="dense FP8 matmul FLOP/s (0 = no FP8 tensor cores; plan.fp8 refused)"),
    "kernels": Field(str, "fused", choices=("fused", "xla_cpu"),
                     doc="fused: flash attention, unpadded grouped matmul; xla_cpu: this repository's CPU lowering"),
}


def hardware_config(*, matmul_peak: dict, vector_peak: dict, gemm_table=None, collective_table=None,
                    **fields) -> ml_collections.ConfigDict:
  """A validated hardware ConfigDict. `gemm_table`: [[M, K, N, flop_per_s], ...] measured (float32);
  `collective_table`: {kind: [latency_s, bytes_per_s]} measured on `devices_per_node` devices."""
  cfg = defaults(SCHEMA).to_dict()  # the declared defaults; the fields without one must be given
  cfg.update(fields)
  cfg["matmul_peak"] = {k: float(matmul_peak[k]) for k in DTYPE_KEYS}
  cfg["vector_peak"] = {k: float(vector_peak[k]) for k in DTYPE_KEYS}
  cfg["gemm_table"] = json.dumps(gemm_table or [])
  cfg["collective_table"] = json.dumps(collective_table or {})
  hw = ml_collections.ConfigDict(cfg)
  return validate_hardware(hw)


def validate_hardware(hw):
  d = hw.to_dict() if isinstance(hw, ml_collections.ConfigDict) else dict(hw)
  for key in ("matmul_peak", "vector_peak"):
    for k in DTYPE_KEYS:
      v = d.get(key, {}).get(k)
      if not isinstance(v, int | float) or v <= 0:
        raise ConfigError(f"hardware.{key}.{k}: {v!r} is out of range; allowed: a number > 0 (FLOP/s)")
  flat = {k: v for k, v in d.items() if k not in ("matmul_peak", "vector_peak", "gemm_table", "collective_table")}
  validate(flat, SCHEMA, root="hardware")
  for row in json.loads(d["gemm_table"]):
    if len(row) != 4 or min(row) <= 0:
      raise ConfigError(f"hardware.gemm_table: row {row!r} must be [M, K, N, flop_per_s] with positive entries")
  for kind, v in json.loads(d["collective_table"]).items():
    if kind not in COLLECTIVES or len(v) != 2 or v[1] <= 0 or v[0] < 0:
      raise ConfigError(f"hardware.collective_table.{kind}: {v!r}; allowed kinds {COLLECTIVES}, [latency_s >= 0, "
                        "bytes_per_s > 0]")
  return hw


def load_hardware(path_or_name: str) -> ml_collections.ConfigDict:
  """A hardware file path, or a bare name under configs/hardware/ (e.g. 'h100')."""
  path = path_or_name
  if not os.path.exists(path):
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    cand = os.path.join(root, "configs", "hardware", f"{path_or_name}.py")
    if not os.path.exists(cand):
      raise ConfigError(f"--hardware: {path_or_name!r} is neither a file nor a name in configs/hardware/")
    path = cand
  return validate_hardware(load_config_file(path, what="--hardware"))


def gemm_table(hw) -> list:
  return json.loads(hw.gemm_table)


def collective_table(hw) -> dict:
  return json.loads(hw.collective_table)


def _py(v) -> str:
  if isinstance(v, float):
    return repr(v) if (v == 0 or 1e-3 <= abs(v) < 1e6) else f"{v:.6g}"
  return repr(v)


def write_hardware_file(hw, path: str, notes: dict, title: str) -> None:
  """Writes `hw` as a hardware file with `notes[field]` (its source) as a comment beside each number."""
  d = hw.to_dict()
  lines = [f'"""{title}"""', "", "from pangu_jax.sim.hardware import hardware_config", "", "",
           "def get_config():", "  return hardware_config("]
  for key in sorted(d):
    if key in ("gemm_table", "collective_table"):
      continue
    val = d[key]
    txt = "{" + ", ".join(f"{k!r}: {_py(x)}" for k, x in val.items()) + "}" if isinstance(val, dict) else _py(val)
    line = f"      {key}={txt},  # {notes.get(key, 'assumption')}"
    if len(line) > 120:  # keep generated files within the line length: the source goes on the line above
      line = f"      # {notes.get(key, 'assumption')}\n      {key}={txt},"
    lines.append(line)
  lines.append(f"      # {notes.get('gemm_table', 'measured')}")
  lines.append("      gemm_table=[")
  for row in gemm_table(hw):
    lines.append("          [" + ", ".join(_py(float(x)) for x in row) + "],")
  lines.append("      ],")
  lines.append(f"      # {notes.get('collective_table', 'measured')}")
  lines.append("      collective_table={")
  for k, v in collective_table(hw).items():
    lines.append(f"          {k!r}: [{_py(float(v[0]))}, {_py(float(v[1]))}],")
  lines.append("      },")
  lines.append("  )")
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "w") as f:
    f.write("\n".join(lines) + "\n")


def log_interp_rate(table: list, m: float, k: float, n: float) -> float:
  """Measured FLOP/s at (m, k, n): multilinear interpolation of log(rate) over the table's log-spaced grid,
  clamped at its edges (beyond the largest measured dims the rate stays flat)."""
  ms = sorted({r[0] for r in table})
  ks = sorted({r[1] for r in table})
  ns = sorted({r[2] for r in table})
  rates = {(r[0], r[1], r[2]): r[3] for r in table}

  def bracket(axis, x):
    x = min(max(x, axis[0]), axis[-1])
    for i in range(len(axis) - 1):
      if axis[i] <= x <= axis[i + 1]:
        lo, hi = axis[i], axis[i + 1]
        w = 0.0 if hi == lo else (math.log(x) - math.log(lo)) / (math.log(hi) - math.log(lo))
        return [(lo, 1 - w), (hi, w)]
    return [(axis[0], 1.0)]

  acc, wsum = 0.0, 0.0
  for mv, wm in bracket(ms, m):
    for kv, wk in bracket(ks, k):
      for nv, wn in bracket(ns, n):
        w = wm * wk * wn
        r = rates.get((mv, kv, nv))
        if w > 0 and r is not None:
          acc += w * math.log(r)
          wsum += w
  if wsum == 0:
    return max(r[3] for r in table)
  return math.exp(acc / wsum)
