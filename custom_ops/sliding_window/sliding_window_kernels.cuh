// CUDA kernels of the sliding-window products (same semantics as sliding_window_kernels.h), TF-free: used by
// the TF GPU kernels (sliding_window_ops_gpu.cu.cc) and by the CUDA test harness (harness.cu).
//
// Scores: one warp per (batch, row, head) writes the row's X + 2w + 1 columns; the query row is staged in
// shared memory. Apply kernels: one thread per output feature, the band loop reads consecutive features of
// consecutive threads (coalesced). Accumulation in float (double for double).
#ifndef TFMODELS_SLIDING_WINDOW_KERNELS_CUH_
#define TFMODELS_SLIDING_WINDOW_KERNELS_CUH_

#include <cstdint>
#include <cuda_runtime.h>

#include "common/cuda_utils.cuh"
#include "sliding_window/sliding_window_kernels.h"

namespace tfmodels {
namespace sliding_window {

constexpr int kWarp = 32;
constexpr int kWarpsPerBlock = 8;
constexpr int kMaxSharedDim = 256;  // query rows up to this head size are staged in shared memory

template <typename T>
__global__ void BandedScoresKernel(Dims d, const T* q, const T* k, const T* gk, const bool* key_keep,
                                   const bool* global_keep, T fill, T* out) {
  using A = typename AccType<T>::type;
  __shared__ A q_shared[kWarpsPerBlock][kMaxSharedDim];
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  const int64_t rows = d.batch * d.seq * d.heads, C = d.cols(), D = d.dim, w = d.window, X = d.num_global;
  const bool staged = D <= kMaxSharedDim;
  for (int64_t rowid = blockIdx.x * static_cast<int64_t>(kWarpsPerBlock) + warp; rowid < rows;
       rowid += static_cast<int64_t>(gridDim.x) * kWarpsPerBlock) {
    const int64_t h = rowid % d.heads, i = (rowid / d.heads) % d.seq, b = rowid / (d.heads * d.seq);
    const T* qi = q + d.row(b, i, h);
    if (staged) {
      for (int64_t e = lane; e < D; e += kWarp) q_shared[warp][e] = static_cast<A>(qi[e]);
      __syncwarp();
    }
    T* dst = out + d.srow(b, i, h);
    for (int64_t c = lane; c < C; c += kWarp) {
      const T* other = nullptr;
      bool valid;
      if (c < X) {
        valid = global_keep == nullptr || global_keep[b * X + c];
        other = gk + d.grow(b, c, h);
      } else {
        const int64_t m = i + (c - X) - w;
        valid = m >= 0 && m < d.seq && (key_keep == nullptr || key_keep[b * d.seq + m]);
        other = k + d.row(b, valid ? m : 0, h);
      }
      if (!valid) {
        dst[c] = fill;
        continue;
      }
      A s = A(0);
      if (staged) {
        for (int64_t e = 0; e < D; ++e) s += q_shared[warp][e] * static_cast<A>(other[e]);
      } else {
        for (int64_t e = 0; e < D; ++e) s += static_cast<A>(qi[e]) * static_cast<A>(other[e]);
      }
      dst[c] = static_cast<T>(s);
    }
    __syncwarp();
  }
}

// kTransposed == false: o[i, e] = sum_c p[i, c] gv[c, e] + sum_j p[i, X + j] v[i + j - w, e]
// kTransposed == true:  o[m, e] = sum_j p[m + w - j, X + j] u[m + w - j, e]
template <bool kTransposed, typename T>
__global__ void BandedApplyKernel(Dims d, const T* p, const T* v, const T* gv, const bool* key_keep,
                                  const bool* global_keep, T* out) {
  using A = typename AccType<T>::type;
  const int64_t D = d.dim, w = d.window, X = d.num_global, S = d.seq;
  const int64_t total = d.batch * S * d.heads * D;
  TFMODELS_CUDA_LOOP(idx, total) {
    const int64_t e = idx % D, h = (idx / D) % d.heads, i = (idx / (D * d.heads)) % S;
    const int64_t b = idx / (D * d.heads * S);
    A s = A(0);
    if (!kTransposed) {
      const T* prow = p + d.srow(b, i, h);
      for (int64_t c = 0; c < X; ++c) {
        if (global_keep != nullptr && !global_keep[b * X + c]) continue;
        s += static_cast<A>(prow[c]) * static_cast<A>(gv[d.grow(b, c, h) + e]);
      }
      for (int64_t j = 0; j <= 2 * w; ++j) {
        const int64_t m = i + j - w;
        if (m < 0 || m >= S || (key_keep != nullptr && !key_keep[b * S + m])) continue;
        s += static_cast<A>(prow[X + j]) * static_cast<A>(v[d.row(b, m, h) + e]);
      }
    } else if (key_keep == nullptr || key_keep[b * S + i]) {
      for (int64_t j = 0; j <= 2 * w; ++j) {
        const int64_t n = i + w - j;
        if (n < 0 || n >= S) continue;
        s += static_cast<A>(p[d.srow(b, n, h) + X + j]) * static_cast<A>(v[d.row(b, n, h) + e]);
      }
    }
    out[d.row(b, i, h) + e] = static_cast<T>(s);
  }
}

// o[b, c, h, e] = sum_i p[b, i, h, c] u[b, i, h, e]  (zero where global_keep is false)
template <typename T>
__global__ void GlobalApplyTransposedKernel(Dims d, const T* p, const T* u, const bool* global_keep, T* out) {
  using A = typename AccType<T>::type;
  const int64_t D = d.dim, X = d.num_global;
  const int64_t total = d.batch * X * d.heads * D;
  TFMODELS_CUDA_LOOP(idx, total) {
    const int64_t e = idx % D, h = (idx / D) % d.heads, c = (idx / (D * d.heads)) % X;
    const int64_t b = idx / (D * d.heads * X);
    A s = A(0);
    if (global_keep == nullptr || global_keep[b * X + c]) {
      for (int64_t i = 0; i < d.seq; ++i) s += static_cast<A>(p[d.srow(b, i, h) + c]) * static_cast<A>(u[d.row(b, i, h) + e]);
    }
    out[d.grow(b, c, h) + e] = static_cast<T>(s);
  }
}

// ---------------------------------------------------------------------------------------------------------
// Host-side launchers (device pointers, asynchronous on `stream`); they return the launch status.

template <typename T>
cudaError_t LaunchBandedScores(cudaStream_t stream, const Dims& d, const T* q, const T* k, const T* gk,
                               const bool* key_keep, const bool* global_keep, T fill, T* out) {
  const int64_t rows = d.batch * d.seq * d.heads;
  if (rows == 0) return cudaSuccess;
  const int64_t blocks = (rows + kWarpsPerBlock - 1) / kWarpsPerBlock;
  const int grid = static_cast<int>(blocks < 65535 ? blocks : 65535);
  BandedScoresKernel<T><<<grid, kWarp * kWarpsPerBlock, 0, stream>>>(d, q, k, gk, key_keep, global_keep, fill, out);
  return cudaGetLastError();
}

template <typename T>
cudaError_t LaunchBandedApply(cudaStream_t stream, const Dims& d, const T* p, const T* v, const T* gv,
                              const bool* key_keep, const bool* global_keep, T* out) {
  const int64_t total = d.batch * d.seq * d.heads * d.dim;
  if (total == 0) return cudaSuccess;
  BandedApplyKernel<false, T><<<BlocksFor(total), 256, 0, stream>>>(d, p, v, gv, key_keep, global_keep, out);
  return cudaGetLastError();
}

template <typename T>
cudaError_t LaunchBandedApplyTransposed(cudaStream_t stream, const Dims& d, const T* p, const T* u,
                                        const bool* key_keep, T* out) {
  const int64_t total = d.batch * d.seq * d.heads * d.dim;
  if (total == 0) return cudaSuccess;
  BandedApplyKernel<true, T><<<BlocksFor(total), 256, 0, stream>>>(d, p, u, nullptr, key_keep, nullptr, out);
  return cudaGetLastError();
}

template <typename T>
cudaError_t LaunchGlobalApplyTransposed(cudaStream_t stream, const Dims& d, const T* p, const T* u,
                                        const bool* global_keep, T* out) {
  const int64_t total = d.batch * d.num_global * d.heads * d.dim;
  if (total == 0) return cudaSuccess;
  GlobalApplyTransposedKernel<T><<<BlocksFor(total), 256, 0, stream>>>(d, p, u, global_keep, out);
  return cudaGetLastError();
}

}  // namespace sliding_window
}  // namespace tfmodels

#endif  // TFMODELS_SLIDING_WINDOW_KERNELS_CUH_
