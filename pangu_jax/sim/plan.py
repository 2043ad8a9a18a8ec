"""A parallel plan: the keys of `simulate --plan=k=v,...` (docs/contracts.md), their defaults and consistency checks.

Our definitions: devices = tp * pp * dp; the expert-parallel group lives inside the (dp x tp) devices of a
stage: with tp_extend_ep the experts are split over ep * tp devices (each expert whole), otherwise over ep
devices with each expert's FFN split by tp. gbs counts sequences; micro-batches per DP rank m = gbs/(dp*mbs).

Without tp_extend_ep (tp > 1, experts split by tp, Megatron-Core's expert tensor parallelism ETP = TP) a device
of EP rank g and TP rank j holds the j-th column slice of expert group g; its EP peers are the devices with the
same TP rank. Each device's experts therefore process T x top_k rows of a micro-batch (T = mbs x seq tokens of
its DP rank; the rows of all tp sequence shards of its ep peers), at 1/tp of the FFN width: summed over the
dp x tp devices of a stage that is dp x T x top_k full-width rows, each routed (token, expert) pair once.

Later keys (issue 28): `fp8` runs the GEMMs that DeepSeek-V3 runs in FP8 at the hardware's `fp8_peak`
(ops.FP8_GEMMS); `zero` is the ZeRO / FSDP stage of the data-parallel replicas (0 nothing sharded; 1 optimiser
state, Megatron's distributed optimiser, the default; 2 and gradients; 3 and weights, gathered per micro-batch
forward and backward); `overlap` is the master switch of communication overlap, `overlap_ep`, `overlap_dp`,
`overlap_pp`, `overlap_tp` the switch per kind (TP overlap is off by default: Megatron's TP-communication
overlap is a separate feature most published runs do not report).
"""

from __future__ import annotations

import dataclasses

from confspec import ConfigError

REMATS = ("none", "full", "fine", "selective", "offload")


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
  fp8: bool = False
  zero: int = 1
  overlap_ep: bool = True
  overlap_dp: bool = True
  overlap_pp: bool = True
  overlap_tp: bool = False

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

  def overlaps(self, kind: str) -> bool:
    """Whether `kind` ("ep" | "dp" | "pp" | "tp") communication is overlapped with compute."""
    return self.overlap and getattr(self, f"overlap_{kind}")

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
  vals.update({k: o[k] for k in ("fp8", "zero", "overlap_ep", "overlap_dp", "overlap_pp", "overlap_tp") if k in o})
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
  if not 0 <= plan.zero <= 3:
    raise ConfigError(f"plan.zero: {plan.zero} is out of range; allowed: 0, 1, 2, 3")
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
  if m.get("attention", "mla") == "gqa" and m.num_kv_heads % plan.tp and plan.tp % m.num_kv_heads:
    raise ConfigError(f"plan.tp: {plan.tp} and num_kv_heads ({m.num_kv_heads}) must divide one another")
  if plan.seq > m.max_seq_len:
    raise ConfigError(f"plan.seq: {plan.seq} is out of range; allowed: <= model.max_seq_len ({m.max_seq_len})")
  if plan.vpp > 1 and plan.pp == 1:
    raise ConfigError("plan.vpp: interleaving (vpp > 1) needs pp > 1")
