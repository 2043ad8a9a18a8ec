"""NVIDIA GB200 (one Blackwell GPU of a GB200 NVL72 rack), for the simulator (pangu_jax/sim).

Public figures only: NVIDIA's GB200 NVL72 specifications give rack totals for 72 GPUs (FP8 720 PFLOPS and BF16
360 PFLOPS with sparsity, i.e. 5 and 2.5 PFLOPS dense per GPU; TF32 180 PFLOPS with sparsity; FP32 6,480 TFLOPS;
HBM3e 13.4 TB at 576 TB/s, i.e. 186 GB at 8 TB/s per GPU; fifth-generation NVLink 130 TB/s, i.e. 1.8 TB/s per GPU,
one NVLink domain of 72 GPUs). Between racks: one 400 Gb/s ConnectX-7 InfiniBand NIC per GPU (the NVL72 reference
design). Efficiency constants: the same generic assumptions as configs/hardware/h100.py. Every number carries its
source or says "assumption".
"""

from pangu_jax.sim.hardware import hardware_config


def get_config():
  return hardware_config(
      name="gb200",
      # NVL72 spec / 72 GPUs: BF16 360 PF sparse -> 2.5 PF dense per GPU; TF32 180 PF sparse -> 1.25 PF dense
      matmul_peak={"bfloat16": 2.5e15, "float32": 1.25e15},
      fp8_peak=5.0e15,  # NVL72 spec: FP8 720 PF sparse / 72 -> 5 PF dense per GPU
      vector_peak={"bfloat16": 180e12, "float32": 90e12},  # NVL72 spec: FP32 6,480 TF / 72; bf16 assumption 2x
      gemm_eff_max=0.75,  # assumption (as h100.py)
      gemm_half_dim=96.0,  # assumption (as h100.py)
      attn_eff=0.5,  # assumption (as h100.py)
      memory_gb=186.0,  # NVL72 spec: 13.4 TB HBM3e / 72
      mem_bw=8.0e12,  # NVL72 spec: 576 TB/s / 72
      mem_bw_eff=0.8,  # assumption (as h100.py)
      mem_reserved_gb=6.0,  # assumption: CUDA context, NCCL buffers, allocator fragmentation (more than h100's 4)
      devices_per_node=72,  # one NVLink domain per NVL72 rack
      intra_bw=900e9,  # NVLink 5: 1.8 TB/s bidirectional per GPU = 900 GB/s per direction
      intra_latency_s=8e-6,  # assumption (as h100.py)
      inter_bw=50e9,  # NVL72 reference design: one 400 Gb/s ConnectX-7 per GPU
      inter_latency_s=15e-6,  # assumption (as h100.py)
      comm_eff=0.8,  # assumption (as h100.py)
      offload_bw=180e9,  # assumption: NVLink-C2C to the Grace CPU, 900 GB/s total, 0.2 of it usable for swaps
      overlap_eff=0.8,  # assumption (as h100.py)
      kernels="fused",  # flash attention, grouped matmul without padding, fused permute (as h100.py)
      op_overhead_s=4e-6,  # assumption (as h100.py)
  )
