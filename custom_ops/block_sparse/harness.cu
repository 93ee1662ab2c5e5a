// TF-free test harness for the block-sparse kernels: extern "C" entry points on host pointers, running either
// the CPU functors (block_sparse_kernels.h, with std::thread parallelism) or the CUDA kernels
// (block_sparse_kernels.cuh; the harness copies to and from the device). Driven by
// tests/ops/block_sparse_harness_cases.py through ctypes (python tests/ops/cuda_harness.py). float32 only.
// Every entry point returns 0 on success, else a CUDA error code (or -1 for bad indices).
#include <cstdint>
#include <string>
#include <vector>

#include <cuda_runtime.h>

#include "block_sparse/block_sparse_kernels.cuh"
#include "block_sparse/block_sparse_kernels.h"
#include "common/parallel.h"

namespace {

using tfmodels::block_sparse::kBlock;
using tfmodels::block_sparse::kBlockArea;

template <typename T>
struct DeviceBuffer {
  T* ptr = nullptr;
  int64_t count = 0;
  cudaError_t status = cudaSuccess;
  explicit DeviceBuffer(int64_t n, const T* host = nullptr) : count(n) {
    status = cudaMalloc(&ptr, sizeof(T) * (n > 0 ? n : 1));
    if (status == cudaSuccess && host != nullptr && n > 0)
      status = cudaMemcpy(ptr, host, sizeof(T) * n, cudaMemcpyHostToDevice);
  }
  cudaError_t CopyTo(T* host) const {
    return count > 0 ? cudaMemcpy(host, ptr, sizeof(T) * count, cudaMemcpyDeviceToHost) : cudaSuccess;
  }
  ~DeviceBuffer() {
    if (ptr != nullptr) cudaFree(ptr);
  }
};

int Finish(cudaError_t launch) {
  if (launch != cudaSuccess) return static_cast<int>(launch);
  return static_cast<int>(cudaDeviceSynchronize());
}

}  // namespace

extern "C" {

int bs_check_indices(const int32_t* indices, int64_t count, int64_t rows, int64_t cols) {
  return tfmodels::block_sparse::CheckIndices(indices, count, rows, cols).empty() ? 0 : -1;
}

int bs_sddmm_cpu(const float* a, const float* b, const int32_t* indices, float* out, int64_t batch, int64_t rows,
                 int64_t cols, int64_t dim, int64_t slots) {
  if (bs_check_indices(indices, batch * slots, rows, cols) != 0) return -1;
  tfmodels::block_sparse::Sddmm<float>(tfmodels::ThreadFor(), a, b, indices, out, batch, rows, cols, dim, slots);
  return 0;
}

int bs_sddmm_gpu(const float* a, const float* b, const int32_t* indices, float* out, int64_t batch, int64_t rows,
                 int64_t cols, int64_t dim, int64_t slots) {
  if (bs_check_indices(indices, batch * slots, rows, cols) != 0) return -1;
  DeviceBuffer<float> da(batch * rows * kBlock * dim, a), db(batch * cols * kBlock * dim, b);
  DeviceBuffer<int32_t> di(batch * slots, indices);
  DeviceBuffer<float> dout(batch * slots * kBlockArea);
  for (cudaError_t s : {da.status, db.status, di.status, dout.status})
    if (s != cudaSuccess) return static_cast<int>(s);
  int status = Finish(tfmodels::block_sparse::cuda::LaunchSddmm<float>(nullptr, da.ptr, db.ptr, di.ptr, dout.ptr,
                                                                        batch, rows, cols, dim, slots));
  return status != 0 ? status : static_cast<int>(dout.CopyTo(out));
}

int bs_spmm_cpu(const float* blocks, const int32_t* indices, const float* dense, float* out, int64_t batch,
                int64_t rows, int64_t cols, int64_t dim, int64_t slots, int transpose) {
  if (bs_check_indices(indices, batch * slots, rows, cols) != 0) return -1;
  tfmodels::block_sparse::Spmm<float>(tfmodels::ThreadFor(), blocks, indices, dense, out, batch, rows, cols, dim,
                                      slots, transpose != 0);
  return 0;
}

int bs_spmm_gpu(const float* blocks, const int32_t* indices, const float* dense, float* out, int64_t batch,
                int64_t rows, int64_t cols, int64_t dim, int64_t slots, int transpose) {
  if (bs_check_indices(indices, batch * slots, rows, cols) != 0) return -1;
  const int64_t dense_blocks = transpose ? rows : cols, out_blocks = transpose ? cols : rows;
  DeviceBuffer<float> dblocks(batch * slots * kBlockArea, blocks), ddense(batch * dense_blocks * kBlock * dim, dense);
  DeviceBuffer<int32_t> di(batch * slots, indices);
  DeviceBuffer<float> dout(batch * out_blocks * kBlock * dim);
  for (cudaError_t s : {dblocks.status, ddense.status, di.status, dout.status})
    if (s != cudaSuccess) return static_cast<int>(s);
  int status = Finish(tfmodels::block_sparse::cuda::LaunchSpmm<float>(
      nullptr, dblocks.ptr, di.ptr, ddense.ptr, dout.ptr, batch, rows, cols, dim, slots, transpose != 0));
  return status != 0 ? status : static_cast<int>(dout.CopyTo(out));
}

int bs_row_reduce_cpu(const float* blocks, const int32_t* indices, float* out, int64_t batch, int64_t rows,
                      int64_t cols, int64_t slots, int is_max) {
  if (bs_check_indices(indices, batch * slots, rows, cols) != 0) return -1;
  tfmodels::block_sparse::RowReduce<float>(tfmodels::ThreadFor(), blocks, indices, out, batch, rows, cols, slots,
                                           is_max != 0);
  return 0;
}

int bs_row_reduce_gpu(const float* blocks, const int32_t* indices, float* out, int64_t batch, int64_t rows,
                      int64_t cols, int64_t slots, int is_max) {
  if (bs_check_indices(indices, batch * slots, rows, cols) != 0) return -1;
  DeviceBuffer<float> dblocks(batch * slots * kBlockArea, blocks);
  DeviceBuffer<int32_t> di(batch * slots, indices);
  DeviceBuffer<float> dout(batch * rows * kBlock);
  for (cudaError_t s : {dblocks.status, di.status, dout.status})
    if (s != cudaSuccess) return static_cast<int>(s);
  int status = Finish(tfmodels::block_sparse::cuda::LaunchRowReduce<float>(nullptr, dblocks.ptr, di.ptr, dout.ptr,
                                                                           batch, rows, cols, slots, is_max != 0));
  return status != 0 ? status : static_cast<int>(dout.CopyTo(out));
}

}  // extern "C"
