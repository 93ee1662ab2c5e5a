// TF-free test harness of the LSH kernels: extern "C" entry points, driven from numpy through ctypes
// (tests/ops/lsh_harness_cases.py, run by `python tests/ops/cuda_harness.py` on a GPU machine).
//
// Every entry point takes host pointers and `use_gpu`: 0 runs the CPU functor (lsh_kernels.h, std::thread
// parallel-for), 1 copies the inputs to the GPU, runs the CUDA kernels (lsh_kernels.cuh) and copies the result
// back. Returns 0 on success, a CUDA error code otherwise, -1 when the GPU path is not compiled in (a host-only
// build with `g++ -x c++`, which the CPU test suite uses to check the harness without a GPU).
#include <cstdint>
#include <vector>

#include "common/parallel.h"
#include "lsh/lsh_kernels.h"

#ifdef __CUDACC__
#include <cuda_runtime.h>

#include "lsh/lsh_kernels.cuh"

namespace {

// A device copy of a host array (or an output buffer), freed on scope exit.
template <typename T>
struct DeviceArray {
  T* ptr = nullptr;
  int64_t count = 0;
  cudaError_t status = cudaSuccess;
  DeviceArray(const T* host, int64_t n) : count(n) {
    status = cudaMalloc(&ptr, std::max<int64_t>(1, n) * sizeof(T));
    if (status == cudaSuccess && host != nullptr && n > 0) {
      status = cudaMemcpy(ptr, host, n * sizeof(T), cudaMemcpyHostToDevice);
    }
  }
  ~DeviceArray() { cudaFree(ptr); }
  cudaError_t CopyTo(T* host) const {
    return count > 0 ? cudaMemcpy(host, ptr, count * sizeof(T), cudaMemcpyDeviceToHost) : cudaSuccess;
  }
};

template <typename... Arrays>
int FirstError(const Arrays&... arrays) {
  cudaError_t errors[] = {arrays.status...};
  for (cudaError_t e : errors) {
    if (e != cudaSuccess) return static_cast<int>(e);
  }
  return 0;
}

}  // namespace
#endif  // __CUDACC__

using tfmodels::lsh::CumulationArgs;
using tfmodels::lsh::FastHashArgs;

extern "C" {

int lsh_harness_has_gpu() {
#ifdef __CUDACC__
  int count = 0;
  return cudaGetDeviceCount(&count) == cudaSuccess && count > 0;
#else
  return 0;
#endif
}

int lsh_fast_hash(int use_gpu, const float* vectors, const int32_t* mask, const float* projections, int64_t batch,
                  int64_t num_vectors, int64_t dim, int64_t padded_dim, int64_t num_part, int64_t num_hash,
                  int64_t code_len, int32_t* codes) {
  FastHashArgs a{vectors, mask, projections, codes, batch, num_vectors, dim, padded_dim, num_part, num_hash,
                 code_len};
  if (!use_gpu) {
    tfmodels::lsh::FastHash(tfmodels::ThreadFor(), a);
    return 0;
  }
#ifdef __CUDACC__
  DeviceArray<float> d_vectors(vectors, batch * num_vectors * dim);
  DeviceArray<int32_t> d_mask(mask, batch * num_vectors);
  DeviceArray<float> d_projections(projections, batch * 3 * num_part * padded_dim);
  DeviceArray<int32_t> d_codes(nullptr, batch * num_vectors * num_hash);
  if (int e = FirstError(d_vectors, d_mask, d_projections, d_codes)) return e;
  a.vectors = d_vectors.ptr;
  a.mask = d_mask.ptr;
  a.projections = d_projections.ptr;
  a.codes = d_codes.ptr;
  cudaError_t status = tfmodels::lsh::FastHashGpu(nullptr, a);
  if (status == cudaSuccess) status = cudaDeviceSynchronize();
  if (status == cudaSuccess) status = d_codes.CopyTo(codes);
  return static_cast<int>(status);
#else
  return -1;
#endif
}

int lsh_cumulation(int use_gpu, int weighted, const int32_t* query_mask, const int32_t* query_code,
                   const float* query_weight, const int32_t* key_mask, const int32_t* key_code,
                   const float* key_weight, const float* value, int64_t batch, int64_t num_query, int64_t num_key,
                   int64_t num_hash, int64_t weight_dim, int64_t value_dim, int64_t capacity, float* out) {
  CumulationArgs a{query_mask, query_code, query_weight, key_mask, key_code, key_weight, value, out,
                   batch, num_query, num_key, num_hash, weight_dim, value_dim, capacity};
  if (!use_gpu) {
    if (weighted) {
      tfmodels::lsh::LshWeightedCumulation(tfmodels::ThreadFor(), a);
    } else {
      tfmodels::lsh::LshCumulation(tfmodels::ThreadFor(), a);
    }
    return 0;
  }
#ifdef __CUDACC__
  DeviceArray<int32_t> d_qmask(query_mask, batch * num_query);
  DeviceArray<int32_t> d_qcode(query_code, batch * num_query * num_hash);
  DeviceArray<float> d_qweight(weighted ? query_weight : nullptr, weighted ? batch * num_query * weight_dim : 0);
  DeviceArray<int32_t> d_kmask(key_mask, batch * num_key);
  DeviceArray<int32_t> d_kcode(key_code, batch * num_key * num_hash);
  DeviceArray<float> d_kweight(weighted ? key_weight : nullptr, weighted ? batch * num_key * weight_dim : 0);
  DeviceArray<float> d_value(value, batch * num_key * value_dim);
  DeviceArray<float> d_out(nullptr, batch * num_query * value_dim);
  if (int e = FirstError(d_qmask, d_qcode, d_qweight, d_kmask, d_kcode, d_kweight, d_value, d_out)) return e;
  a.query_mask = d_qmask.ptr;
  a.query_code = d_qcode.ptr;
  a.query_weight = d_qweight.ptr;
  a.key_mask = d_kmask.ptr;
  a.key_code = d_kcode.ptr;
  a.key_weight = d_kweight.ptr;
  a.value = d_value.ptr;
  a.out = d_out.ptr;
  cudaError_t status;
  if (weighted) {
    DeviceArray<int32_t> scratch(nullptr, tfmodels::lsh::WeightedScratchInts(a));
    if (scratch.status != cudaSuccess) return static_cast<int>(scratch.status);
    status = tfmodels::lsh::LshWeightedCumulationGpu(nullptr, a, scratch.ptr);
    if (status == cudaSuccess) status = cudaDeviceSynchronize();
  } else {
    // A small table budget, so that the cases also exercise the chunking over hashes.
    const int64_t chunk = tfmodels::lsh::CumulationHashChunk(a, int64_t{1} << 20);
    DeviceArray<float> scratch(nullptr, tfmodels::lsh::CumulationScratchBytes(a, chunk) / 4);
    if (scratch.status != cudaSuccess) return static_cast<int>(scratch.status);
    status = tfmodels::lsh::LshCumulationGpu(nullptr, a, scratch.ptr, chunk);
    if (status == cudaSuccess) status = cudaDeviceSynchronize();
  }
  if (status == cudaSuccess) status = d_out.CopyTo(out);
  return static_cast<int>(status);
#else
  return -1;
#endif
}

}  // extern "C"
