"""A parallel plan: the keys of `simulate --plan=k=v,...` (docs/contracts.md), their defaults and consistency checks.

Our definitions: devices = tp * pp * dp; the expert-parallel group lives inside the (dp x tp) devices of a
stage: with tp_extend_ep the experts are split over ep * tp devices (each expert whole), otherwise over ep
devices with each expert's FFN split by tp. gbs counts sequences; micro-batches per DP rank m = gbs/(dp*mbs).
"""

from __future__ import annotations

import dataclasses

from confspec import ConfigError

REMATS = ("none", "full", "fine", "offload")


@dataclasses.dataclass(frozen=True)
class Plan:
  tp: int = 1
  pp: int = 1
  vpp: int = 1
  ep: int = 1
  dp: int = 1
  mbs: int = 1
  gbs: int = 1
  seq: int = 128
  devices: int = 1
  remat: str = "none"
  hier_a2a: bool = True
  overlap: bool = True
  tp_extend_ep: bool = False
  dtype: str = "bfloat16"

  @property
  def microbatches(self) -> int:
    return self.gbs // (self.dp * self.mbs)

  @property
  def ep_eff(self) -> int:
    """Devices the routed experts are spread over (each expert whole when tp_extend_ep)."""
    return self.ep * self.tp if self.tp_extend_ep else self.ep

  @property
  def expert_dp(self) -> int:
    """Replicas of each expert shard (its gradient all-reduce group)."""
    return max(self.dp // self.ep, 1)

  def as_dict(self) -> dict:
    return dataclasses.asdict(self)


_BOOL = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}


def _coerce(key, raw):
  field = {f.name: f for f in dataclasses.fields(Plan)}[key]
  if field.type in ("bool", bool):
    if isinstance(raw, bool):
      return raw
    if str(raw).lower() not in _BOOL:
      raise ConfigError(f"plan.{key}: {raw!r} is not a bool; allowed: true/false/1/0")
    return _BOOL[str(raw).lower()]
  if field.type in ("int", int):
    try:
      return int(raw)
    except ValueError as e:
      raise ConfigError(f"plan.{key}: {raw!r} is not an integer") from e
  return str(raw)


def parse_plan_string(text: str) -> dict:
  out = {}
  names = {f.name for f in dataclasses.fields(Plan)}
  for part in filter(None, (p.strip() for p in (text or "").split(","))):
    if "=" not in part:
      raise ConfigError(f"plan: {part!r} is not key=value")
    k, v = part.split("=", 1)
    k = k.strip()
    if k not in names:
      raise ConfigError(f"plan.{k}: unknown key; allowed: {', '.join(sorted(names))}")
    out[k] = _coerce(k, v.strip())
  return out


def make_plan(cfg, overrides: dict | None = None) -> Plan:
  """Defaults come from the config (`parallel`, `train`, `model.dtype`); `overrides` (plan keys) win.
  dp defaults to devices / (tp * pp); devices to tp * pp * dp; gbs to train.batch_size."""
  o = dict(overrides or {})
  par, tr = cfg.parallel, cfg.train
  tp = o.get("tp", par.tensor)
  pp = o.get("pp", par.stage)
  if "devices" in o and "dp" not in o:
    if o["devices"] % (tp * pp):
      raise ConfigError(f"plan.devices: {o['devices']} is not a multiple of tp*pp ({tp * pp})")
    o["dp"] = o["devices"] // (tp * pp)
  dp = o.get("dp", par.data)
  vals = dict(tp=tp, pp=pp, vpp=o.get("vpp", par.virtual_stages), ep=o.get("ep", par.expert), dp=dp,
              mbs=o.get("mbs", 1), gbs=o.get("gbs", tr.batch_size), seq=o.get("seq", tr.seq_len),
              devices=o.get("devices", tp * pp * dp), remat=o.get("remat", par.remat),
              hier_a2a=o.get("hier_a2a", par.hier_a2a), overlap=o.get("overlap", True),
              tp_extend_ep=o.get("tp_extend_ep", par.tp_extend_ep), dtype=o.get("dtype", cfg.model.dtype))
  plan = Plan(**vals)
  check_plan(plan, cfg)
  return plan


def check_plan(plan: Plan, cfg) -> None:
  for k in ("tp", "pp", "vpp", "ep", "dp", "mbs", "gbs", "seq", "devices"):
    if getattr(plan, k) < 1:
      raise ConfigError(f"plan.{k}: {getattr(plan, k)} is out of range; allowed: >= 1")
  if plan.remat not in REMATS:
    raise ConfigError(f"plan.remat: {plan.remat!r} is not allowed; allowed: {', '.join(REMATS)}")
  if plan.dtype not in ("bfloat16", "float32"):
    raise ConfigError(f"plan.dtype: {plan.dtype!r}; allowed: bfloat16, float32")
  if plan.tp * plan.pp * plan.dp != plan.devices:
    raise ConfigError(f"plan.devices: {plan.devices} != tp*pp*dp = {plan.tp * plan.pp * plan.dp}")
  if plan.gbs % (plan.dp * plan.mbs):
    raise ConfigError(f"plan.gbs: {plan.gbs} is not a multiple of dp*mbs ({plan.dp * plan.mbs})")
  if (plan.dp * plan.tp) % plan.ep_eff:
    raise ConfigError(f"plan.ep: ep{'*tp' if plan.tp_extend_ep else ''} = {plan.ep_eff} must divide dp*tp "
                      f"({plan.dp * plan.tp})")
  m = cfg.model
  if m.num_routed_experts % plan.ep_eff:
    raise ConfigError(f"plan.ep: {plan.ep_eff} expert shards must divide num_routed_experts ({m.num_routed_experts})")
  if m.num_heads % plan.tp:
    raise ConfigError(f"plan.tp: {plan.tp} must divide num_heads ({m.num_heads})")
  if plan.seq > m.max_seq_len:
    raise ConfigError(f"plan.seq: {plan.seq} is out of range; allowed: <= model.max_seq_len ({m.max_seq_len})")
  if plan.vpp > 1 and plan.pp == 1:
    raise ConfigError("plan.vpp: interleaving (vpp > 1) needs pp > 1")
