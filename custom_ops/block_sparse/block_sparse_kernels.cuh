// Block-sparse attention primitives (MRA), TF-free CUDA kernels. Same semantics and layouts as
// block_sparse_kernels.h (see there). Every output element is written by exactly one thread, accumulating over
// the slots in index order: no atomics, deterministic, and no output pre-zeroing needed.
#ifndef TFMODELS_BLOCK_SPARSE_KERNELS_CUH_
#define TFMODELS_BLOCK_SPARSE_KERNELS_CUH_

#include <cstdint>
#include <cuda_runtime.h>

#include "block_sparse/block_sparse_kernels.h"

namespace tfmodels {
namespace block_sparse {
namespace cuda {

// One CUDA block (32 x 8 threads) per (batch, slot); each thread computes 4 of the 32 x 32 outputs, with the
// two 32-row operands staged through shared memory 32 dims at a time.
template <typename T>
__global__ void SddmmKernel(const T* __restrict__ a, const T* __restrict__ b, const int32_t* __restrict__ indices,
                            T* __restrict__ out, int64_t num_row_blocks, int64_t num_col_blocks, int64_t dim,
                            int64_t num_slots) {
  __shared__ T a_tile[kBlock][kBlock + 1];
  __shared__ T b_tile[kBlock][kBlock + 1];
  const int64_t n = blockIdx.x;  // batch * num_slots + slot
  const int64_t bi = n / num_slots;
  const int32_t idx = indices[n];
  const int tx = threadIdx.x, ty = threadIdx.y;  // tx: column j, ty: rows ty, ty + 8, ...
  T* o = out + n * kBlockArea;
  if (idx < 0) {
    for (int i = ty; i < kBlock; i += blockDim.y) o[i * kBlock + tx] = T(0);
    return;
  }
  const int64_t r = idx / num_col_blocks, c = idx % num_col_blocks;
  const T* a_block = a + (bi * num_row_blocks + r) * kBlock * dim;
  const T* b_block = b + (bi * num_col_blocks + c) * kBlock * dim;
  T acc[4] = {T(0), T(0), T(0), T(0)};
  for (int64_t d0 = 0; d0 < dim; d0 += kBlock) {
    for (int p = ty; p < kBlock; p += blockDim.y) {
      const int64_t d = d0 + tx;
      a_tile[p][tx] = d < dim ? a_block[p * dim + d] : T(0);
      b_tile[p][tx] = d < dim ? b_block[p * dim + d] : T(0);
    }
    __syncthreads();
    for (int k = 0; k < kBlock; ++k) {
      const T bv = b_tile[tx][k];
#pragma unroll
      for (int q = 0; q < 4; ++q) acc[q] += a_tile[ty + q * 8][k] * bv;
    }
    __syncthreads();
  }
#pragma unroll
  for (int q = 0; q < 4; ++q) o[(ty + q * 8) * kBlock + tx] = acc[q];
}

// One CUDA block per (batch, output block); threads over (position, dim). The slots are scanned in order and
// those whose target is this output block are accumulated.
template <typename T>
__global__ void SpmmKernel(const T* __restrict__ blocks, const int32_t* __restrict__ indices,
                           const T* __restrict__ dense, T* __restrict__ out, int64_t num_row_blocks,
                           int64_t num_col_blocks, int64_t dim, int64_t num_slots, bool transpose) {
  const int64_t out_blocks = transpose ? num_col_blocks : num_row_blocks;
  const int64_t dense_blocks = transpose ? num_row_blocks : num_col_blocks;
  const int64_t n = blockIdx.x;  // batch * out_blocks + target
  const int64_t bi = n / out_blocks, target = n % out_blocks;
  const int32_t* idx = indices + bi * num_slots;
  T* o = out + n * kBlock * dim;
  for (int64_t e = threadIdx.x; e < kBlock * dim; e += blockDim.x) {
    const int p = static_cast<int>(e / dim);
    const int64_t d = e % dim;
    T acc = T(0);
    for (int64_t s = 0; s < num_slots; ++s) {
      const int32_t v = idx[s];
      if (v < 0) continue;
      const int64_t r = v / num_col_blocks, c = v % num_col_blocks;
      if ((transpose ? c : r) != target) continue;
      const T* block = blocks + (bi * num_slots + s) * kBlockArea;
      const T* src = dense + (bi * dense_blocks + (transpose ? r : c)) * kBlock * dim + d;
      for (int q = 0; q < kBlock; ++q) {
        const T w = transpose ? block[q * kBlock + p] : block[p * kBlock + q];
        acc += w * src[q * dim];
      }
    }
    o[e] = acc;
  }
}

// One CUDA block of 32 threads per (batch, row block); thread i reduces row position i.
template <typename T>
__global__ void RowReduceKernel(const T* __restrict__ blocks, const int32_t* __restrict__ indices,
                                T* __restrict__ out, int64_t num_row_blocks, int64_t num_col_blocks,
                                int64_t num_slots, bool is_max) {
  const int64_t n = blockIdx.x;  // batch * num_row_blocks + row
  const int64_t bi = n / num_row_blocks, row = n % num_row_blocks;
  const int i = threadIdx.x;
  const int32_t* idx = indices + bi * num_slots;
  T result = is_max ? -INFINITY : T(0);
  for (int64_t s = 0; s < num_slots; ++s) {
    const int32_t v = idx[s];
    if (v < 0 || v / num_col_blocks != row) continue;
    const T* line = blocks + (bi * num_slots + s) * kBlockArea + i * kBlock;
    if (is_max) {
      T m = line[0];
      for (int j = 1; j < kBlock; ++j) m = line[j] > m ? line[j] : m;
      result = m > result ? m : result;
    } else {
      T total = T(0);
      for (int j = 0; j < kBlock; ++j) total += line[j];
      result += total;
    }
  }
  out[n * kBlock + i] = result;
}

// Launchers (device pointers). They return the launch status.

template <typename T>
cudaError_t LaunchSddmm(cudaStream_t stream, const T* a, const T* b, const int32_t* indices, T* out,
                        int64_t batch, int64_t num_row_blocks, int64_t num_col_blocks, int64_t dim,
                        int64_t num_slots) {
  const int64_t grid = batch * num_slots;
  if (grid == 0) return cudaSuccess;
  SddmmKernel<T><<<static_cast<unsigned>(grid), dim3(kBlock, 8), 0, stream>>>(
      a, b, indices, out, num_row_blocks, num_col_blocks, dim, num_slots);
  return cudaGetLastError();
}

template <typename T>
cudaError_t LaunchSpmm(cudaStream_t stream, const T* blocks, const int32_t* indices, const T* dense, T* out,
                       int64_t batch, int64_t num_row_blocks, int64_t num_col_blocks, int64_t dim,
                       int64_t num_slots, bool transpose) {
  const int64_t grid = batch * (transpose ? num_col_blocks : num_row_blocks);
  if (grid == 0 || dim == 0) return cudaSuccess;
  SpmmKernel<T><<<static_cast<unsigned>(grid), 256, 0, stream>>>(
      blocks, indices, dense, out, num_row_blocks, num_col_blocks, dim, num_slots, transpose);
  return cudaGetLastError();
}

template <typename T>
cudaError_t LaunchRowReduce(cudaStream_t stream, const T* blocks, const int32_t* indices, T* out, int64_t batch,
                            int64_t num_row_blocks, int64_t num_col_blocks, int64_t num_slots, bool is_max) {
  const int64_t grid = batch * num_row_blocks;
  if (grid == 0) return cudaSuccess;
  RowReduceKernel<T><<<static_cast<unsigned>(grid), kBlock, 0, stream>>>(
      blocks, indices, out, num_row_blocks, num_col_blocks, num_slots, is_max);
  return cudaGetLastError();
}

}  // namespace cuda
}  // namespace block_sparse
}  // namespace tfmodels

#endif  // TFMODELS_BLOCK_SPARSE_KERNELS_CUH_
