// Kernels that break CUDA's rules on purpose, and one that keeps them, with C entry points: each shows that a check
// of the CPU emulation (cuda_runtime.h here) fires, driven by tests/ops/cuda_emulation/selftest.py. Every entry
// point copies `n` floats in, launches, copies `n` floats out and returns the CUDA status.
#include <cuda_runtime.h>

namespace {

// Each thread reads its right neighbour's value through shared memory; without the barrier, the read can come
// before the neighbour's write.
__global__ void RotateLeftKernel(const float* in, float* out, bool with_barrier) {
  __shared__ float staged[256];
  const int t = threadIdx.x, base = blockIdx.x * blockDim.x;
  staged[t] = in[base + t];
  if (with_barrier) __syncthreads();
  out[base + t] = staged[(t + 1) % blockDim.x];
}

// Half the block waits at a barrier the other half never reaches.
__global__ void DivergentBarrierKernel(float* out) {
  if (threadIdx.x < blockDim.x / 2) __syncthreads();
  out[blockIdx.x * blockDim.x + threadIdx.x] = 1.0f;
}

// Every lane ends with its warp's sum (butterfly of shuffles).
__global__ void WarpSumKernel(const float* in, float* out) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  float value = in[i];
  for (int lane_mask = 16; lane_mask > 0; lane_mask /= 2) value += __shfl_xor_sync(0xffffffffu, value, lane_mask);
  out[i] = value;
}

// Writes one element past the end of its buffer.
__global__ void WritePastEndKernel(float* out, int n) { out[n + threadIdx.x] = 1.0f; }

// Indexes its shared array one past the end (the last thread).
__global__ void SharedOverflowKernel(float* out) {
  __shared__ float staged[64];
  staged[threadIdx.x + 1] = 1.0f;
  __syncthreads();
  out[threadIdx.x] = staged[threadIdx.x];
}

// Dynamic shared memory read before any thread wrote it.
__global__ void ReadUnwrittenSharedKernel(float* out) {
  extern __shared__ float scratch[];
  out[threadIdx.x] = scratch[threadIdx.x];
}

struct Buffers {
  float* in = nullptr;
  float* out = nullptr;
  int status = cudaSuccess;
  Buffers(const float* host, int n) {
    status = cudaMalloc(&in, n * sizeof(float));
    if (status == cudaSuccess) status = cudaMalloc(&out, n * sizeof(float));
    if (status == cudaSuccess) status = cudaMemcpy(in, host, n * sizeof(float), cudaMemcpyHostToDevice);
  }
  ~Buffers() {
    cudaFree(in);
    cudaFree(out);
  }
  int Finish(float* host, int n) {
    int result = cudaGetLastError();
    if (result == cudaSuccess) result = cudaDeviceSynchronize();
    if (result == cudaSuccess) result = cudaMemcpy(host, out, n * sizeof(float), cudaMemcpyDeviceToHost);
    return result;
  }
};

}  // namespace

extern "C" {

// blocks x threads values; threads <= 256.
int selftest_rotate_left(const float* in, float* out, int blocks, int threads, int with_barrier) {
  Buffers b(in, blocks * threads);
  if (b.status != cudaSuccess) return b.status;
  RotateLeftKernel<<<blocks, threads>>>(b.in, b.out, with_barrier != 0);
  return b.Finish(out, blocks * threads);
}

int selftest_divergent_barrier(float* out, int threads) {
  Buffers b(out, threads);
  if (b.status != cudaSuccess) return b.status;
  DivergentBarrierKernel<<<1, threads>>>(b.out);
  return b.Finish(out, threads);
}

int selftest_warp_sum(const float* in, float* out, int blocks, int threads) {
  Buffers b(in, blocks * threads);
  if (b.status != cudaSuccess) return b.status;
  WarpSumKernel<<<blocks, threads>>>(b.in, b.out);
  return b.Finish(out, blocks * threads);
}

int selftest_write_past_end(float* out, int n) {
  Buffers b(out, n);
  if (b.status != cudaSuccess) return b.status;
  WritePastEndKernel<<<1, 32>>>(b.out, n);
  return b.Finish(out, n);
}

int selftest_read_unwritten_shared(float* out, int threads) {
  Buffers b(out, threads);
  if (b.status != cudaSuccess) return b.status;
  ReadUnwrittenSharedKernel<<<1, threads, threads * sizeof(float)>>>(b.out);
  return b.Finish(out, threads);
}

// 64 threads.
int selftest_shared_overflow(float* out) {
  Buffers b(out, 64);
  if (b.status != cudaSuccess) return b.status;
  SharedOverflowKernel<<<1, 64>>>(b.out);
  return b.Finish(out, 64);
}

// A block of 2048 threads: more than CUDA allows.
int selftest_oversized_block(float* out) {
  Buffers b(out, 1);
  if (b.status != cudaSuccess) return b.status;
  DivergentBarrierKernel<<<1, 2048>>>(b.out);
  return b.Finish(out, 1);
}

}  // extern "C"
