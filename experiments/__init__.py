"""Studies, reports and the demo: the drivers that run the libraries and write `results/<study>/`.

The library packages (`pangu_jax`, `npu_backend`, `control_brax`) hold what the models, exporters and
algorithms exist for; everything here orchestrates them, aggregates seeds, draws plots and writes reports.
One module per study, each a binary (`python -m experiments.<module>`):

  demo              the repository's main job end to end (`make demo`; report in runs/demo/report.md)
  behaviour         Pangu behaviour study: routing by text domain, balancing granularity, DSSN + TinyInit
                    stability (results/behaviour)
  sim_report        the simulator's paper-setting report, sweeps and timeline plots (results/sim)
  assembly_methods  RL alone vs + compliance vs + PEAD (PPO, DDPG), LCRL vs global (results/pead_*, lcrl_*)
  cs3               CS3 connection graph of an assembly env, with heat maps (results/cs3_*)
  transfer          scratch vs fine-tuning vs ETCL vs ETCL + WDPD on a new geometry (results/transfer_*)
  etcl_acceptance   the ETCL law on the scripted controller, paired episodes (results/etcl)
"""
