"""Pictures: MFU against each swept plan parameter (others at the base plan), and a pipeline timeline."""

from __future__ import annotations

import dataclasses

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from confspec import ConfigError  # noqa: E402
from pangu_jax.sim.plan import make_plan  # noqa: E402
from pangu_jax.sim.predict import predict  # noqa: E402
from pangu_jax.sim.schedule import simulate  # noqa: E402

SWEEPS = {
    "tp": (1, 2, 4, 8),
    "pp": (4, 8, 16, 32),
    "vpp": (1, 2, 4),
    "ep": (1, 2, 4, 8, 16),
    "mbs": (1, 2, 4),
    "gbs": (768, 1536, 3072, 6144, 12288),
    "remat": ("none", "fine", "offload", "full"),
    "hier_a2a": (False, True),
    "overlap": (False, True),
    "tp_extend_ep": (False, True),
}


def sweep(cfg, hw, base_plan, key, values) -> list:
  rows = []
  for v in values:
    over = dataclasses.asdict(base_plan)
    over[key] = v
    if key in ("tp", "pp"):
      over.pop("dp")
    try:
      plan = make_plan(cfg, over)
    except ConfigError as e:
      rows.append({"value": v, "error": str(e)})
      continue
    r = predict(cfg, hw, plan)
    rows.append({"value": v, "mfu": r["mfu"], "tokens_per_s": r["tokens_per_s"], "fits": r["fits"],
                 "memory_per_device_gb": r["memory_per_device_gb"]})
  return rows


def plot_sweeps(cfg, hw, base_plan, path: str) -> dict:
  data = {k: sweep(cfg, hw, base_plan, k, v) for k, v in SWEEPS.items()}
  n = len(data)
  cols = 5
  fig, axes = plt.subplots((n + cols - 1) // cols, cols, figsize=(3.2 * cols, 2.8 * ((n + cols - 1) // cols)))
  for ax, (key, rows) in zip(axes.flat, data.items()):
    ok = [r for r in rows if "mfu" in r]
    xs = [str(r["value"]) for r in ok]
    ys = [r["mfu"] for r in ok]
    colors = ["tab:blue" if r["fits"] else "tab:red" for r in ok]
    ax.bar(xs, ys, color=colors)
    base_val = getattr(base_plan, key)
    ax.set_title(f"{key} (base {base_val})", fontsize=9)
    ax.set_ylim(0, max(ys + [0.01]) * 1.2)
    ax.tick_params(labelsize=8)
  for ax in list(axes.flat)[n:]:
    ax.axis("off")
  axes.flat[0].set_ylabel("MFU")
  fig.suptitle(f"MFU vs one plan parameter ({hw.name}); red = does not fit in memory", fontsize=10)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return data


def plot_timeline(p: int, m: int, v: int, t_f: float, t_b: float, path: str, title: str = "") -> dict:
  res = simulate(p, m, v, t_f, t_b)
  fig, ax = plt.subplots(figsize=(12, 0.35 * p + 1.2))
  for stage, kind, mb, chunk, start, end in res["events"]:
    shade = 0.55 + 0.45 * (chunk / max(v - 1, 1)) if v > 1 else 1.0  # first chunk darker
    color = (0.2 * shade, 0.45 * shade, 0.85 * shade) if kind == "F" else (0.9 * shade, 0.5 * shade, 0.1 * shade)
    ax.barh(stage, end - start, left=start, color=color, edgecolor="white", linewidth=0.3)
    if end - start > res["time"] / 60:
      ax.text((start + end) / 2, stage, str(mb), ha="center", va="center", fontsize=5, color="white")
  ax.set_yticks(range(p))
  ax.set_yticklabels([f"stage {i}" for i in range(p)], fontsize=6)
  ax.invert_yaxis()
  ax.set_xlabel("seconds")
  busy = sum(e[5] - e[4] for e in res["events"])
  bubble = 1 - busy / (p * res["time"])
  ax.set_title(title or f"pp={p} vpp={v} m={m}: forward blue, backward orange; bubble {bubble:.3f}", fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return {"time": res["time"], "bubble_fraction": bubble}
