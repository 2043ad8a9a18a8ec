"""This machine, calibrated by `python -m pangu_jax.simulate --calibrate` (microbenchmarks only)."""

from pangu_jax.sim.hardware import hardware_config


def get_config():
  return hardware_config(
      attn_eff=1.0,  # unused by the xla_cpu kernels (attention is two batched GEMMs + softmax)
      comm_eff=1.0,  # 1: the collective table is achieved rates
      devices_per_node=8,  # simulated CPU devices in one process
      gather_bw=2.89382e+10,  # measured: jnp.take of 32768 x 128 rows
      gemm_eff_max=1.0,  # unused when gemm_table is present
      gemm_half_dim=0.0,  # unused when gemm_table is present
      host_shared_compute=True,  # simulated devices share this host's cores
      inter_bw=3.85784e+08,  # no second node: same as intra
      inter_latency_s=8.48839e-05,  # no second node: same as intra
      intra_bw=3.85784e+08,  # measured all_to_all rate (simulated devices)
      intra_latency_s=8.48839e-05,  # measured all_to_all latency
      kernels='xla_cpu',  # this repository's CPU lowering
      # measured: float32 = best GEMM rate of the table; bfloat16 = a 1024^3 bf16 matmul
      matmul_peak={'bfloat16': 1.80405e+11, 'float32': 1.96069e+11},
      mem_bw=4.78129e+10,  # measured: fused elementwise x*a+b over 16 MB, read+write
      mem_bw_eff=1.0,  # 1: mem_bw is already the achieved rate
      mem_reserved_gb=0.0,  # none reserved on the host
      memory_gb=25.276059648,  # host RAM (os.sysconf)
      name='calibrated_vm',  # this machine
      offload_bw=4.78129e+10,  # host memory: same as mem_bw
      op_overhead_s=1.61222e-06,  # measured: chain of 64 dependent 8x8 matmuls in one jit, per matmul
      overlap_eff=0.0,  # 0: on simulated CPU devices communication is memory copies on the same cores (no overlap)
      probe_s=0.0012080113073690865,  # measured: calibrate.speed_probe('load'), 2 s back-to-back at calibration time
      # measured: the same stacks under full remat, (grad - fwd - modelled bwd) / fwd
      recompute_ratio=0.606852838564131,
      residual_s_per_byte=8.53859e-10,  # measured: scanned SwiGLU stacks, grad - fwd - modelled bwd per saved byte
      source='calibrated 2026-11-29 20:21 on x86_64, 2 cores, jax 0.9.2',  # calibration run
      step_overhead_s=2.56652e-05,  # measured: dispatch of a jitted step on a donated state plus a host sync
      # measured: elementwise ops are bandwidth-bound here; set to mem_bw (FLOP/s never binds)
      vector_peak={'bfloat16': 4.78129e+10, 'float32': 4.78129e+10},
      # measured float32 GEMM rate [M, K, N, FLOP/s]: R products per jit, less op_overhead_s
      gemm_table=[
          [16.0, 8.0, 8.0, 1.42133e+09],
          [16.0, 8.0, 32.0, 4.32437e+09],
          [16.0, 8.0, 128.0, 2.01589e+10],
          [16.0, 8.0, 512.0, 5.86321e+10],
          [16.0, 8.0, 2048.0, 6.95589e+10],
          [16.0, 32.0, 8.0, 4.62538e+09],
          [16.0, 32.0, 32.0, 1.08279e+10],
          [16.0, 32.0, 128.0, 4.47139e+10],
          [16.0, 32.0, 512.0, 1.27005e+11],
          [16.0, 32.0, 2048.0, 1.21365e+11],
          [16.0, 128.0, 8.0, 1.8198e+10],
          [16.0, 128.0, 32.0, 5.41019e+10],
          [16.0, 128.0, 128.0, 1.30458e+11],
          [16.0, 128.0, 512.0, 1.13777e+11],
          [16.0, 128.0, 2048.0, 1.20214e+11],
          [16.0, 512.0, 8.0, 3.74064e+10],
          [16.0, 512.0, 32.0, 1.33206e+11],
          [16.0, 512.0, 128.0, 1.1588e+11],
          [16.0, 512.0, 512.0, 9.33802e+10],
          [16.0, 512.0, 2048.0, 1.39655e+11],
          [16.0, 2048.0, 8.0, 8.11067e+10],
          [16.0, 2048.0, 32.0, 1.16671e+11],
          [16.0, 2048.0, 128.0, 1.23154e+11],
          [16.0, 2048.0, 512.0, 6.8847e+10],
          [16.0, 2048.0, 2048.0, 5.18072e+10],
          [64.0, 8.0, 8.0, 2.75276e+09],
          [64.0, 8.0, 32.0, 1.34738e+10],
          [64.0, 8.0, 128.0, 4.12528e+10],
          [64.0, 8.0, 512.0, 7.72434e+10],
          [64.0, 8.0, 2048.0, 5.91684e+10],
          [64.0, 32.0, 8.0, 1.91377e+10],
          [64.0, 32.0, 32.0, 4.39071e+10],
          [64.0, 32.0, 128.0, 7.83826e+10],
          [64.0, 32.0, 512.0, 1.00411e+11],
          [64.0, 32.0, 2048.0, 1.14221e+11],
          [64.0, 128.0, 8.0, 5.33133e+10],
          [64.0, 128.0, 32.0, 1.11801e+11],
          [64.0, 128.0, 128.0, 9.4136e+10],
          [64.0, 128.0, 512.0, 7.95224e+10],
          [64.0, 128.0, 2048.0, 1.3327e+11],
          [64.0, 512.0, 8.0, 1.1652e+11],
          [64.0, 512.0, 32.0, 1.14329e+11],
          [64.0, 512.0, 128.0, 1.05043e+11],
          [64.0, 512.0, 512.0, 1.57787e+11],
          [64.0, 512.0, 2048.0, 1.35579e+11],
          [64.0, 2048.0, 8.0, 1.01954e+11],
          [64.0, 2048.0, 32.0, 8.32487e+10],
          [64.0, 2048.0, 128.0, 1.17341e+11],
          [64.0, 2048.0, 512.0, 1.67055e+11],
          [64.0, 2048.0, 2048.0, 1.25414e+11],
          [256.0, 8.0, 8.0, 1.26815e+10],
          [256.0, 8.0, 32.0, 4.29036e+10],
          [256.0, 8.0, 128.0, 8.32396e+10],
          [256.0, 8.0, 512.0, 5.16417e+10],
          [256.0, 8.0, 2048.0, 7.58202e+10],
          [256.0, 32.0, 8.0, 3.76062e+10],
          [256.0, 32.0, 32.0, 8.45974e+10],
          [256.0, 32.0, 128.0, 1.0363e+11],
          [256.0, 32.0, 512.0, 1.07665e+11],
          [256.0, 32.0, 2048.0, 1.24402e+11],
          [256.0, 128.0, 8.0, 1.01899e+11],
          [256.0, 128.0, 32.0, 1.08349e+11],
          [256.0, 128.0, 128.0, 8.4851e+10],
          [256.0, 128.0, 512.0, 1.6309e+11],
          [256.0, 128.0, 2048.0, 1.84162e+11],
          [256.0, 512.0, 8.0, 9.10849e+10],
          [256.0, 512.0, 32.0, 9.03654e+10],
          [256.0, 512.0, 128.0, 1.4384e+11],
          [256.0, 512.0, 512.0, 1.89607e+11],
          [256.0, 512.0, 2048.0, 1.96069e+11],
          [256.0, 2048.0, 8.0, 7.42752e+10],
          [256.0, 2048.0, 32.0, 1.13712e+11],
          [256.0, 2048.0, 128.0, 1.7305e+11],
          [256.0, 2048.0, 512.0, 1.70796e+11],
          [1024.0, 8.0, 8.0, 2.20715e+10],
          [1024.0, 8.0, 32.0, 6.19354e+10],
          [1024.0, 8.0, 128.0, 5.20451e+10],
          [1024.0, 8.0, 512.0, 7.90918e+10],
          [1024.0, 8.0, 2048.0, 1.09926e+11],
          [1024.0, 32.0, 8.0, 7.99366e+10],
          [1024.0, 32.0, 32.0, 8.70194e+10],
          [1024.0, 32.0, 128.0, 8.08154e+10],
          [1024.0, 32.0, 512.0, 1.18025e+11],
          [1024.0, 32.0, 2048.0, 1.0352e+11],
          [1024.0, 128.0, 8.0, 8.10788e+10],
          [1024.0, 128.0, 32.0, 7.5745e+10],
          [1024.0, 128.0, 128.0, 1.32928e+11],
          [1024.0, 128.0, 512.0, 1.33831e+11],
          [1024.0, 128.0, 2048.0, 1.69867e+11],
          [1024.0, 512.0, 8.0, 7.27058e+10],
          [1024.0, 512.0, 32.0, 1.34333e+11],
          [1024.0, 512.0, 128.0, 1.60784e+11],
          [1024.0, 512.0, 512.0, 1.73322e+11],
          [1024.0, 2048.0, 8.0, 1.24348e+11],
          [1024.0, 2048.0, 32.0, 1.53609e+11],
          [1024.0, 2048.0, 128.0, 1.68602e+11],
          [4096.0, 8.0, 8.0, 4.0645e+10],
          [4096.0, 8.0, 32.0, 3.82163e+10],
          [4096.0, 8.0, 128.0, 6.60355e+10],
          [4096.0, 8.0, 512.0, 1.126e+11],
          [4096.0, 8.0, 2048.0, 1.15481e+10],
          [4096.0, 32.0, 8.0, 5.41388e+10],
          [4096.0, 32.0, 32.0, 8.85111e+10],
          [4096.0, 32.0, 128.0, 1.29414e+11],
          [4096.0, 32.0, 512.0, 1.38397e+11],
          [4096.0, 32.0, 2048.0, 2.87937e+10],
          [4096.0, 128.0, 8.0, 8.87223e+10],
          [4096.0, 128.0, 32.0, 1.31755e+11],
          [4096.0, 128.0, 128.0, 1.64641e+11],
          [4096.0, 128.0, 512.0, 1.65966e+11],
          [4096.0, 512.0, 8.0, 1.5453e+11],
          [4096.0, 512.0, 32.0, 1.87225e+11],
          [4096.0, 512.0, 128.0, 1.83488e+11],
          [4096.0, 2048.0, 8.0, 7.32874e+10],
          [4096.0, 2048.0, 32.0, 1.03279e+11],
      ],
      # measured on 8 simulated CPU devices: kind: [latency_s, bytes/s per device]
      collective_table={
          'all_reduce': [0.000216186, 2.84833e+08],
          'all_gather': [0.000275173, 1.40646e+08],
          'reduce_scatter': [0.000240898, 4.44626e+08],
          'all_to_all': [8.48839e-05, 3.85784e+08],
          'ppermute': [8.01635e-05, 6.08984e+08],
      },
  )
