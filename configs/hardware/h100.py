"""NVIDIA H100 SXM5 80GB in an 8-GPU HGX/DGX node, for the simulator (pangu_jax/sim).

Public figures only (NVIDIA H100 datasheet, DGX H100 user guide); every number carries its source or says
"assumption". Efficiency constants are the same generic assumptions as configs/hardware/ascend_a2.py.
"""

from pangu_jax.sim.hardware import hardware_config


def get_config():
  return hardware_config(
      name="h100",
      # NVIDIA H100 SXM datasheet: 989 TFLOPS dense BF16 tensor core; 67 TFLOPS FP32 (non-tensor); TF32
      # tensor 494 TFLOPS dense is what an fp32 matmul uses under XLA's default precision.
      matmul_peak={"bfloat16": 989e12, "float32": 494e12},
      fp8_peak=1979e12,  # datasheet: 1,979 TFLOPS dense FP8 tensor core
      vector_peak={"bfloat16": 134e12, "float32": 67e12},  # datasheet: FP32 67 TFLOPS; bf16 assumption 2x
      gemm_eff_max=0.75,  # assumption: cuBLAS reaches ~700-750 TFLOPS on large bf16 GEMMs (NVIDIA benchmarks)
      gemm_half_dim=96.0,  # assumption: 128-wide tensor-core tiles (same as ascend_a2.py)
      attn_eff=0.5,  # assumption: FlashAttention-2/3 forward+backward ~50% of peak
      memory_gb=80.0,  # datasheet: 80 GB HBM3
      mem_bw=3.35e12,  # datasheet: 3.35 TB/s
      mem_bw_eff=0.8,  # assumption (as ascend_a2.py)
      mem_reserved_gb=4.0,  # assumption: CUDA context, NCCL buffers, allocator fragmentation
      devices_per_node=8,  # DGX H100: 8 GPUs
      intra_bw=450e9,  # datasheet: NVLink 4 900 GB/s bidirectional = 450 GB/s per direction
      intra_latency_s=8e-6,  # assumption: NCCL small-message latency on NVLink/NVSwitch
      inter_bw=50e9,  # DGX H100: one 400 Gb/s ConnectX-7 (InfiniBand NDR) per GPU = 50 GB/s
      inter_latency_s=15e-6,  # assumption: InfiniBand RDMA plus NCCL software
      comm_eff=0.8,  # assumption (as ascend_a2.py)
      offload_bw=51.2e9,  # PCIe 5.0 x16: 64 GB/s per direction, assumption 0.8 of it
      # Share of overlappable communication actually hidden under compute when overlap is on: assumption, 0.8
      # (compute slows while sharing memory bandwidth and cores with communication kernels).
      overlap_eff=0.8,
      kernels="fused",  # flash attention, grouped matmul without padding, fused permute (the paper's operators)
      op_overhead_s=4e-6,  # assumption: CUDA kernel launch
  )
