// TF-free CUDA kernels of the LSH op family, with the semantics of lsh_kernels.h (see there). Included by the TF
// GPU OpKernels (lsh_ops_gpu.cu.cc) and by the test harness (harness.cu). Launchers take device pointers, a
// stream and caller-allocated scratch memory (sizes from the *ScratchBytes functions), and return the CUDA error.
//
// Differences from the reference kernels: any number of vectors, any head size up to 1024 (the Hadamard size P
// must be a power of two <= 1024, one thread per element), any value/weight size and any number of hashes; no
// multiples of 8 or 32. Sums use atomics, so the order of additions (and the last bits) may differ from the CPU.
// Codes outside [0, capacity) are skipped on the GPU (the CPU path rejects them with InvalidArgument).
#ifndef TFMODELS_LSH_LSH_KERNELS_CUH_
#define TFMODELS_LSH_LSH_KERNELS_CUH_

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "common/cuda_utils.cuh"
#include "lsh/lsh_kernels.h"

namespace tfmodels {
namespace lsh {

constexpr int64_t kGpuTableBudgetBytes = int64_t{256} << 20;

// --------------------------------------------------------------------------------------------------------------
// fast_hash: one block per (vector, part), one thread per element of the padded vector.

__device__ inline void HadamardBlock(float* buf, int padded_dim, int d) {
  for (int stride = padded_dim / 2; stride >= 1; stride /= 2) {
    __syncthreads();
    const bool upper = (d / stride) % 2 == 1;
    const float a = buf[upper ? d - stride : d];
    const float b = buf[upper ? d : d + stride];
    __syncthreads();
    // __fadd_rn / __fsub_rn are never contracted: the same IEEE operations as the CPU kernel and the twin.
    buf[d] = upper ? __fsub_rn(a, b) : __fadd_rn(a, b);
  }
  __syncthreads();
}

__global__ void FastHashKernel(FastHashArgs a) {
  extern __shared__ float buf[];
  const int64_t unit = blockIdx.x;
  const int64_t part = unit % a.num_part;
  const int64_t row = unit / a.num_part;
  const int64_t b = row / a.num_vectors;
  const int d = threadIdx.x;
  const int P = static_cast<int>(a.padded_dim);
  const int L = static_cast<int>(a.code_len);
  const int per_part = P / L;
  if (a.mask[row] == 0) {
    const int64_t hash = part * per_part + d;
    if (d < per_part && hash < a.num_hash) a.codes[row * a.num_hash + hash] = 0;
    return;
  }
  const float* diag = a.projections + (b * 3 * a.num_part + part) * P;
  const float x = d < a.dim ? a.vectors[row * a.dim + d] : 0.0f;
  buf[d] = __fmul_rn(x, diag[d]);
  HadamardBlock(buf, P, d);
  buf[d] = __fmul_rn(buf[d], diag[a.num_part * P + d]);
  HadamardBlock(buf, P, d);
  buf[d] = __fmul_rn(buf[d], diag[2 * a.num_part * P + d]);
  HadamardBlock(buf, P, d);
  const int64_t hash = part * per_part + d;
  if (d < per_part && hash < a.num_hash) {
    int32_t code = 0;
    for (int i = 0; i < L; ++i) code |= static_cast<int32_t>(buf[d * L + i] > 0.0f) << i;
    a.codes[row * a.num_hash + hash] = code;
  }
}

inline cudaError_t FastHashGpu(cudaStream_t stream, const FastHashArgs& a) {
  const int64_t blocks = a.batch * a.num_vectors * a.num_part;
  if (blocks == 0) return cudaSuccess;
  const int threads = static_cast<int>(a.padded_dim);
  FastHashKernel<<<static_cast<unsigned>(blocks), threads, threads * sizeof(float), stream>>>(a);
  return cudaGetLastError();
}

// --------------------------------------------------------------------------------------------------------------
// lsh_cumulation: per chunk of hashes, scatter-add the key values into [B, hashes, C, D] tables, then each query
// sums its buckets.

__global__ void CumulationScatterKernel(CumulationArgs a, float* table, int64_t h0, int64_t nh) {
  const int64_t D = a.value_dim, C = a.capacity;
  TFMODELS_CUDA_LOOP(i, a.batch * a.num_key * nh * D) {
    const int64_t d = i % D;
    const int64_t hl = (i / D) % nh;
    const int64_t row = i / (D * nh);
    if (a.key_mask[row] == 0) continue;
    const int32_t c = a.key_code[row * a.num_hash + h0 + hl];
    if (c < 0 || c >= C) continue;
    const int64_t b = row / a.num_key;
    atomicAdd(&table[((b * nh + hl) * C + c) * D + d], a.value[row * D + d]);
  }
}

__global__ void CumulationGatherKernel(CumulationArgs a, const float* table, int64_t h0, int64_t nh) {
  const int64_t D = a.value_dim, C = a.capacity;
  TFMODELS_CUDA_LOOP(i, a.batch * a.num_query * D) {
    const int64_t d = i % D;
    const int64_t row = i / D;
    if (a.query_mask[row] == 0) continue;
    const int64_t b = row / a.num_query;
    float sum = 0.0f;
    for (int64_t hl = 0; hl < nh; ++hl) {
      const int32_t c = a.query_code[row * a.num_hash + h0 + hl];
      if (c >= 0 && c < C) sum += table[((b * nh + hl) * C + c) * D + d];
    }
    a.out[i] += sum;
  }
}

__global__ void CumulationFinishKernel(CumulationArgs a) {
  const int64_t D = a.value_dim;
  const float num_hash = static_cast<float>(a.num_hash);
  TFMODELS_CUDA_LOOP(i, a.batch * a.num_query * D) {
    a.out[i] = a.query_mask[i / D] != 0 ? a.out[i] / num_hash : 0.0f;
  }
}

// Hashes per chunk so that the tables fit in `budget_bytes` (at least one).
inline int64_t CumulationHashChunk(const CumulationArgs& a, int64_t budget_bytes = kGpuTableBudgetBytes) {
  const int64_t per_hash = std::max<int64_t>(1, a.batch * a.capacity * a.value_dim * int64_t{sizeof(float)});
  return std::max<int64_t>(1, std::min<int64_t>(a.num_hash, budget_bytes / per_hash));
}

inline int64_t CumulationScratchBytes(const CumulationArgs& a, int64_t hash_chunk) {
  return std::max<int64_t>(1, a.batch * hash_chunk * a.capacity * a.value_dim) * int64_t{sizeof(float)};
}

inline cudaError_t LshCumulationGpu(cudaStream_t stream, const CumulationArgs& a, float* table,
                                    int64_t hash_chunk) {
  const int64_t out_size = a.batch * a.num_query * a.value_dim;
  if (out_size == 0) return cudaSuccess;
  cudaError_t status = cudaMemsetAsync(a.out, 0, out_size * sizeof(float), stream);
  if (status != cudaSuccess) return status;
  for (int64_t h0 = 0; h0 < a.num_hash; h0 += hash_chunk) {
    const int64_t nh = std::min(hash_chunk, a.num_hash - h0);
    status = cudaMemsetAsync(table, 0, a.batch * nh * a.capacity * a.value_dim * sizeof(float), stream);
    if (status != cudaSuccess) return status;
    const int64_t scatter = a.batch * a.num_key * nh * a.value_dim;
    if (scatter > 0) CumulationScatterKernel<<<BlocksFor(scatter), 256, 0, stream>>>(a, table, h0, nh);
    CumulationGatherKernel<<<BlocksFor(out_size), 256, 0, stream>>>(a, table, h0, nh);
  }
  CumulationFinishKernel<<<BlocksFor(out_size), 256, 0, stream>>>(a);
  return cudaGetLastError();
}

// --------------------------------------------------------------------------------------------------------------
// lsh_weighted_cumulation: bucket the keys per (batch, hash) by a counting sort, then one warp per query walks
// the keys of its buckets: dot product of the weights across the lanes, value columns across the lanes.

__global__ void BucketCountKernel(CumulationArgs a, int32_t* offsets) {
  const int64_t H = a.num_hash, C = a.capacity;
  TFMODELS_CUDA_LOOP(i, a.batch * a.num_key * H) {
    const int64_t h = i % H, row = i / H, b = row / a.num_key;
    if (a.key_mask[row] == 0) continue;
    const int32_t c = a.key_code[i];
    if (c < 0 || c >= C) continue;
    atomicAdd(&offsets[(b * H + h) * (C + 1) + c + 1], 1);
  }
}

__global__ void BucketScanKernel(CumulationArgs a, int32_t* offsets, int32_t* cursor) {
  const int64_t C = a.capacity;
  TFMODELS_CUDA_LOOP(unit, a.batch * a.num_hash) {
    int32_t* offset = offsets + unit * (C + 1);
    for (int64_t c = 0; c < C; ++c) {
      offset[c + 1] += offset[c];
      cursor[unit * C + c] = offset[c];
    }
  }
}

__global__ void BucketScatterKernel(CumulationArgs a, int32_t* cursor, int32_t* sorted) {
  const int64_t H = a.num_hash, C = a.capacity;
  TFMODELS_CUDA_LOOP(i, a.batch * a.num_key * H) {
    const int64_t h = i % H, row = i / H, b = row / a.num_key, k = row % a.num_key;
    if (a.key_mask[row] == 0) continue;
    const int32_t c = a.key_code[i];
    if (c < 0 || c >= C) continue;
    const int32_t position = atomicAdd(&cursor[(b * H + h) * C + c], 1);
    sorted[(b * H + h) * a.num_key + position] = static_cast<int32_t>(k);
  }
}

__global__ void WeightedCumulationKernel(CumulationArgs a, const int32_t* offsets, const int32_t* sorted) {
  constexpr int kWarp = 32;
  const int lane = threadIdx.x % kWarp;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * blockDim.x / kWarp;
  const int64_t H = a.num_hash, C = a.capacity, W = a.weight_dim, D = a.value_dim;
  for (int64_t row = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / kWarp;
       row < a.batch * a.num_query; row += warps) {
    float* out = a.out + row * D;
    for (int64_t d = lane; d < D; d += kWarp) out[d] = 0.0f;
    if (a.query_mask[row] == 0) continue;
    const int64_t b = row / a.num_query;
    const float* qw = a.query_weight + row * W;
    for (int64_t h = 0; h < H; ++h) {
      const int32_t c = a.query_code[row * H + h];
      if (c < 0 || c >= C) continue;
      const int32_t* offset = offsets + (b * H + h) * (C + 1);
      const int32_t* keys = sorted + (b * H + h) * a.num_key;
      for (int32_t i = offset[c]; i < offset[c + 1]; ++i) {
        const int64_t k = b * a.num_key + keys[i];
        float partial = 0.0f;
        for (int64_t w = lane; w < W; w += kWarp) partial += qw[w] * a.key_weight[k * W + w];
        for (int offset_lane = kWarp / 2; offset_lane > 0; offset_lane /= 2) {
          partial += __shfl_xor_sync(0xffffffffu, partial, offset_lane);
        }
        for (int64_t d = lane; d < D; d += kWarp) out[d] += partial * a.value[k * D + d];
      }
    }
    const float num_hash = static_cast<float>(H);
    for (int64_t d = lane; d < D; d += kWarp) out[d] = out[d] / num_hash;
  }
}

struct WeightedScratch {
  int32_t* offsets;  // [B * H * (C + 1)]
  int32_t* cursor;   // [B * H * C]
  int32_t* sorted;   // [B * H * Nk]
};

inline int64_t WeightedScratchInts(const CumulationArgs& a) {
  return std::max<int64_t>(1, a.batch * a.num_hash * (2 * a.capacity + 1 + a.num_key));
}

inline WeightedScratch SplitWeightedScratch(const CumulationArgs& a, int32_t* scratch) {
  const int64_t units = a.batch * a.num_hash;
  return WeightedScratch{scratch, scratch + units * (a.capacity + 1), scratch + units * (2 * a.capacity + 1)};
}

inline cudaError_t LshWeightedCumulationGpu(cudaStream_t stream, const CumulationArgs& a, int32_t* scratch) {
  const int64_t rows = a.batch * a.num_query;
  if (rows == 0 || a.value_dim == 0) return cudaSuccess;
  const WeightedScratch s = SplitWeightedScratch(a, scratch);
  const int64_t units = a.batch * a.num_hash;
  cudaError_t status = cudaMemsetAsync(s.offsets, 0, units * (a.capacity + 1) * sizeof(int32_t), stream);
  if (status != cudaSuccess) return status;
  const int64_t pairs = a.batch * a.num_key * a.num_hash;
  if (pairs > 0) BucketCountKernel<<<BlocksFor(pairs), 256, 0, stream>>>(a, s.offsets);
  BucketScanKernel<<<BlocksFor(units), 256, 0, stream>>>(a, s.offsets, s.cursor);
  if (pairs > 0) BucketScatterKernel<<<BlocksFor(pairs), 256, 0, stream>>>(a, s.cursor, s.sorted);
  WeightedCumulationKernel<<<BlocksFor(rows * 32), 256, 0, stream>>>(a, s.offsets, s.sorted);
  return cudaGetLastError();
}

}  // namespace lsh
}  // namespace tfmodels

#endif  // TFMODELS_LSH_LSH_KERNELS_CUH_
