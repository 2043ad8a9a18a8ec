"""The claims ladder (issue 31), declared before any of its runs: cells, levels, pegs, transfer pairs, seeds,
budgets and every claim with the sign and size its paper predicts. docs/claims_declaration.md is the same
declaration in words (protocol, decision rule, compute); this file is what the ladder's driver reads.

A cell is the base task (`base`) with the fields it names changed; peg-file fields (clearance, the evaluation
distribution) go under `peg_overrides`, nested as in the peg config (`{"eval": {"yaw_deg": 12.0}}`), env fields
under `env_overrides`.
The driver writes each cell's peg as a file (`<out>/pegs/<cell>.py`: the named peg file's config with the
overrides) and passes its path as `env.peg`. Clearance cells marked `stability_gated` run only if their level
passes `clearance_rule` (measured first, on the C engine, with the scripted controller).

    from runkit.configfile import load_config_file
    ladder = load_config_file("configs/claims/ladder.py")
"""

import ml_collections

# Nominal clearance per side (m) of the clearance axis, loosest first; the sampled extra is EXTRA_RATIO x nominal
# (the pegs' files use 0.5 mm + up to 0.3 mm, the same ratio).
CLEARANCE_CANDIDATES_M = (0.0005, 0.00035, 0.00025, 0.00015, 0.0001)
EXTRA_RATIO = 0.6

SIX_DOF = ("x", "y", "z", "rx", "ry", "rz")
THREE_DOF = ("x", "y", "z")
PEAD_STAGES_6 = ((("x", "y"), ("z",), ("rx", "ry"), ("rz",)), ())
PEAD_STAGES_3 = ((("x", "y"), ("z",)), ())

PPO_METHODS = ("rl_alone", "rl_compliance", "rl_compliance_pead", "rl_compliance_lcrl", "rl_compliance_lcrl_full")
DDPG_METHODS = ("rl_alone", "rl_compliance", "rl_compliance_pead")
PEAD_ONLY = ("rl_compliance", "rl_compliance_pead")  # the 3-DoF variant cells: PEAD against none


def _mm(x: float) -> str:
  return f"{x * 1e3:.2f}".replace(".", "p") + "mm"


def _cell(axis, tier, peg="l_shape", peg_overrides=None, env_overrides=None, action_dims=SIX_DOF,
          pead_stages=PEAD_STAGES_6, ppo=PPO_METHODS, ddpg=DDPG_METHODS, stability_gated=False, note=""):
  return {"axis": axis, "tier": tier, "peg": peg, "peg_overrides": dict(peg_overrides or {}),
          "env_overrides": dict(env_overrides or {}), "action_dims": tuple(action_dims),
          "pead_stages": pead_stages, "methods": {"ppo": tuple(ppo), "ddpg": tuple(ddpg)},
          "stability_gated": stability_gated, "note": note}


def _cells() -> dict:
  cells = {"base": _cell("base", 1, note="l_shape as its peg file declares it (the committed experiments' task)")}
  for cl in CLEARANCE_CANDIDATES_M[1:]:  # 0.5 mm is the base cell
    cells[f"clearance_{_mm(cl)}"] = _cell(
        "clearance", 1 if cl == min(CLEARANCE_CANDIDATES_M) else 2, stability_gated=True,
        peg_overrides={"clearance": cl, "eval": {"extra_clearance_m": round(EXTRA_RATIO * cl, 7)}},
        note="runs only if this level and every looser one pass clearance_rule")
  for lat in (0.0015, 0.005):
    cells[f"lateral_{_mm(lat)}"] = _cell("lateral", 1 if lat > 0.003 else 2, peg_overrides={"eval": {"lateral_m": lat}})
  for tilt in (1.0, 6.0):
    cells[f"tilt_{tilt:g}deg"] = _cell("angular", 1 if tilt > 3 else 2, peg_overrides={"eval": {"tilt_deg": tilt}})
  for yaw in (2.0, 12.0):
    cells[f"yaw_{yaw:g}deg"] = _cell("angular", 1 if yaw > 5 else 2, peg_overrides={"eval": {"yaw_deg": yaw}})
  for peg in ("square", "rect", "t_shape", "round", "keyed_square", "u_uneven"):
    cells[f"geometry_{peg}"] = _cell("geometry", 1 if peg in ("keyed_square", "u_uneven") else 2, peg=peg,
                                     note="the peg file's own evaluation distribution")
  # The action-dimension variant: translation only (3-DoF) against the 6-DoF cells of the same task. Rotation is
  # then left to the admittance loop alone, which the angular cells stress.
  for name, base in (("base", cells["base"]), ("tilt_6deg", cells["tilt_6deg"]), ("yaw_12deg", cells["yaw_12deg"]),
                     ("geometry_round", cells["geometry_round"])):
    cells[f"dof3_{name}"] = _cell("action_dims", 1 if name == "base" else 2, peg=base["peg"],
                                  peg_overrides=base["peg_overrides"],
                                  action_dims=THREE_DOF, pead_stages=PEAD_STAGES_3,
                                  ppo=PEAD_ONLY, ddpg=PEAD_ONLY, note=f"3-DoF twin of the 6-DoF cell {name}")
  return cells


def _pairs() -> dict:
  def pair(source, target, expected_below_half, role, note, tier=1, target_overrides=None):
    return {"source": source, "target": target, "expected_below_half": expected_below_half, "role": role,
            "note": note, "tier": tier, "target_peg_overrides": dict(target_overrides or {})}

  return {
      "square_rect": pair("square", "rect", False, "control",
                          "committed: the square teacher already inserts rect (1.00 at zero target steps)", tier=2),
      "square_l_shape": pair("square", "l_shape", False, "control",
                             "committed: 0.91 at zero target steps", tier=2),
      "square_keyed_square": pair("square", "keyed_square", True, "test",
                                  "yaw error +-12 deg (source trained at +-3) and a key: the yaw must be found first"),
      "round_l_shape": pair("round", "l_shape", True, "test",
                            "the round teacher never met a yaw error nor a flat-faced rim contact"),
      "square_u_uneven": pair("square", "u_uneven", True, "test",
                              "the target straddles a tongue of plate: contacts on both sides of a wall"),
      # evaluated only if no `test` pair gates in (source success at zero target steps < 0.5)
      "square_keyed_square_tight": pair(
          "square", "keyed_square", True, "fallback",
          "keyed_square at the tightest stable clearance (extra = extra_ratio x it)", tier=2,
          target_overrides={"clearance": "tightest_stable"}),
  }


def _claim(paper, a, b, metric, predicted_sign, cells, kind="ratio", statistic="median", size=None, note="",
           secondary=()):
  return {"paper": paper, "a": a, "b": b, "metric": metric, "predicted_sign": predicted_sign, "kind": kind,
          "statistic": statistic, "predicted_size": size, "cells": cells, "note": note,
          "secondary": tuple(secondary)}


_SECONDARY_RL = (("steps_to_90", -1), ("final_success_rate", 1), ("final_return", 1), ("peak_force_n", -1))


def _claims() -> dict:
  out = {}
  for algo in ("ppo", "ddpg"):
    out[f"compliance_vs_rl_{algo}"] = _claim(
        "RL + compliance (all three papers)", f"{algo}/rl_compliance", f"{algo}/rl_alone", "steps_to_80", -1,
        "all_6dof", note="compliance converges faster; also lower peak force", secondary=_SECONDARY_RL)
    out[f"pead_vs_none_{algo}"] = _claim(
        "PEAD", f"{algo}/rl_compliance_pead", f"{algo}/rl_compliance", "steps_to_80", -1, "all", size=0.70,
        note="30-40% better data efficiency: ratio <= 0.70", secondary=_SECONDARY_RL[:3])
    out[f"pead_dimension_{algo}"] = _claim(
        "PEAD", f"{algo}/rl_compliance_pead", f"{algo}/rl_compliance", "steps_to_80_ratio_6dof_over_3dof", -1,
        "dof3_twins", kind="ratio_of_ratios",
        note="the gain grows with the action dimension: (PEAD/none at 6-DoF) / (PEAD/none at 3-DoF) < 1")
  out["lcrl_vs_global_ppo"] = _claim(
      "LCRL / CS3", "ppo/rl_compliance_lcrl", "ppo/rl_compliance", "steps_to_80", -1, "all_6dof",
      note="better data efficiency, higher final reward, more stable (lower peak force)",
      secondary=(("final_return", 1), ("peak_force_n", -1), ("insertion_time_s", -1)))
  out["lcrl_locality_ppo"] = _claim(
      "LCRL / CS3", "ppo/rl_compliance_lcrl", "ppo/rl_compliance_lcrl_full", "steps_to_80", -1, "all_6dof",
      note="the control: the gain is locality, not the per-component architecture")
  out["etcl_wdpd_vs_scratch"] = _claim(
      "ETCL + WDPD", "etcl_wdpd", "scratch", "target_steps_to_80", -1, "gated_pairs", kind="diff",
      note="less time (target env steps incl. distillation) and better control",
      secondary=(("final_success_rate", 1), ("peak_force_n", -1)))
  out["etcl_wdpd_vs_finetune"] = _claim(
      "ETCL + WDPD", "etcl_wdpd", "finetune", "target_steps_to_80", -1, "gated_pairs", kind="diff",
      secondary=(("final_success_rate", 1), ("peak_force_n", -1)))
  out["wdpd_vs_plain_distillation"] = _claim(
      "ETCL + WDPD", "etcl_wdpd", "etcl_distill", "target_steps_to_80", -1, "gated_pairs", kind="diff",
      note="per-dimension weights beat distilling every dimension fully (w = 1)",
      secondary=(("final_success_rate", 1),))
  return out


def get_config():
  c = ml_collections.ConfigDict()
  c.name = "claims_ladder"
  c.declaration = "docs/claims_declaration.md"
  c.out = "results/claims"
  c.seeds = 5  # per (cell, method): train.num_seeds, seeds 0..4 (train.seed = 0)
  c.backend = "auto"  # env.backend once issue 29 lands (C engine on CPU); one backend for the whole ladder

  # The base task: l_shape as its file declares it; 6-DoF action; the env section's declared defaults.
  c.base = {"peg": "l_shape", "action_dims": SIX_DOF}

  c.algos = ml_collections.ConfigDict({
      "ppo": {"config": "configs/assembly/ppo_l_shape.py", "total_env_steps": 245_760, "evals_per_run": 20,
              "eval_envs": 64, "target_success": 0.0},
      "ddpg": {"config": "configs/assembly/ddpg_l_shape.py", "total_env_steps": 300_000, "evals_per_run": 20,
               "eval_envs": 64, "target_success": 0.0},
  })
  c.pead = {"stages_6dof": PEAD_STAGES_6, "stages_3dof": PEAD_STAGES_3, "switch_fraction": 0.25}
  c.lcrl = {"config": "configs/assembly/lcrl.py", "cs3_per_cell": True}
  c.transfer = {"algo": "ppo", "teacher_env_steps": 245_760, "budget_steps": 163_840, "eval_every_steps": 8192,
                "eval_envs": 64, "etcl_law": "torque", "distill_rollout_len": 32, "distill_steps": 400,
                "methods": ("scratch", "finetune", "etcl", "etcl_wdpd", "etcl_distill"),
                "gate": {"method": "finetune", "statistic": "median", "below": 0.5, "eval_envs": 256}}

  c.clearance_rule = {
      "candidates_m": CLEARANCE_CANDIDATES_M, "extra_ratio": EXTRA_RATIO,
      "pegs": ("l_shape", "square", "keyed_square"), "episodes": 32, "seed": 0, "engine": "mujoco_c",
      "controller": "scripted", "randomize_physics": False, "penetration_quantile": 0.95,
      "max_penetration_ratio": 0.5, "aligned_must_insert": True, "min_levels": 3,
      "fallback_env": {"substeps": 20, "solref_timeconst": 0.001, "solimp_width": 0.0005},
  }
  c.cells = _cells()
  c.pairs = _pairs()
  c.claims = _claims()

  c.decision = {"confidence": 0.95, "n_resamples": 10_000, "helper": "runkit.stats.two_sample_ci",
                "threshold_success": 0.8, "ceiling_steps": "first_eval"}
  return c
