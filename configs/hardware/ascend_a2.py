"""Ascend 910B NPU in an Atlas 800T A2 server (the paper's cluster), for the simulator (pangu_jax/sim).

Public figures only; every number carries its source or says "assumption". Written before any comparison with
the paper's throughput and not tuned afterwards (the efficiency constants are generic figures for vendor GEMM
libraries, fused attention and collective libraries, not Ascend measurements).
"""

from pangu_jax.sim.hardware import hardware_config


def get_config():
  return hardware_config(
      name="ascend_a2",
      # Paper (Pangu Ultra MoE, sec. 5 of our reference): 256 TFLOPS FP16/BF16 per NPU.
      matmul_peak={"bfloat16": 256e12, "float32": 128e12},  # fp32: assumption, half the cube rate (not published)
      # Vector unit (norms, activations, softmax, optimiser): assumption, 1/16 of the cube peak; these ops are
      # memory-bound in practice, so this only matters for tiny tensors.
      vector_peak={"bfloat16": 16e12, "float32": 8e12},
      # Largest-GEMM efficiency: assumption, 0.75 of peak, the figure vendor BLAS libraries typically reach on
      # large bf16 GEMMs (cuBLAS on H100 ~700-750 of 989 TFLOPS in NVIDIA's published GEMM benchmarks).
      gemm_eff_max=0.75,
      # GEMM efficiency halves when the smallest GEMM dimension is this size: assumption, the 128-256 wide
      # matrix-unit tiles of current accelerators (Ascend's cube works on 16x16x16 fractals grouped into
      # larger L0 tiles).
      gemm_half_dim=96.0,
      # Fused (flash) attention efficiency, forward+backward: assumption, FlashAttention-2 reports 50-73% of
      # A100 peak forward and ~45-60% forward+backward; we take 0.5.
      attn_eff=0.5,
      memory_gb=64.0,  # paper: 64 GB HBM per NPU
      # HBM bandwidth: 1.6 TB/s, the widely reported figure for the 910B's HBM2e (assumption: not in the paper).
      mem_bw=1.6e12,
      mem_bw_eff=0.8,  # assumption: streaming kernels reach ~80% of HBM peak (typical of STREAM-like tests)
      # Framework and runtime reserve (CANN workspace, communication buffers, fragmentation): assumption, 4 GB.
      mem_reserved_gb=4.0,
      devices_per_node=8,  # paper: 8 NPUs per node
      # HCCS: 7 links x 56 GB/s per 910B in a fully connected 8-NPU board (Huawei Atlas 800T A2 datasheet
      # figure 392 GB/s aggregate); per direction toward the other 7 NPUs we take 196 GB/s (assumption: half
      # of the bidirectional aggregate).
      intra_bw=196e9,
      intra_latency_s=10e-6,  # assumption: ~10 us per collective step on HCCS (NCCL/HCCL-class latency)
      inter_bw=25e9,  # paper: 200 Gbps RoCE per NPU between nodes = 25 GB/s
      inter_latency_s=20e-6,  # assumption: RDMA over RoCE, ~20 us per step including software
      # Achieved share of link bandwidth by collectives: assumption, 0.8 (nccl-tests bus bandwidth on modern
      # fabrics is 75-85% of the link rate).
      comm_eff=0.8,
      # Host link for tensor swapping: PCIe 4.0 x16, 32 GB/s per direction (910B host interface; assumption 0.8 of it).
      offload_bw=25.6e9,
      # Share of overlappable communication actually hidden under compute when overlap is on: assumption, 0.8
      # (compute slows while sharing memory bandwidth and cores with communication kernels).
      overlap_eff=0.8,
      kernels="fused",  # flash attention, grouped matmul without padding, fused permute (the paper's operators)
      op_overhead_s=5e-6,  # assumption: 5 us per kernel launch/dispatch (typical accelerator launch cost)
  )
