// TF-free CUDA test harness of the sliding-window kernels: C entry points (driven by numpy through ctypes,
// tests/ops/sliding_window_harness_cases.py) that run either the CPU functors of sliding_window_kernels.h or
// the CUDA kernels of sliding_window_kernels.cuh on host arrays. `device` 0 = CPU, 1 = GPU. Returns 0 on
// success, else a CUDA error code.
#include <cuda_runtime.h>

#include <cstdint>
#include <vector>

#include "common/parallel.h"
#include "sliding_window/sliding_window_kernels.cuh"
#include "sliding_window/sliding_window_kernels.h"

namespace {

using tfmodels::ThreadFor;
using tfmodels::sliding_window::Dims;

Dims MakeDims(int64_t batch, int64_t seq, int64_t heads, int64_t dim, int64_t num_global, int64_t window) {
  Dims d;
  d.batch = batch;
  d.seq = seq;
  d.heads = heads;
  d.dim = dim;
  d.num_global = num_global;
  d.window = window;
  return d;
}

// A device copy of a host array (or nullptr), freed on destruction.
template <typename T>
struct DeviceArray {
  T* ptr = nullptr;
  size_t count = 0;
  DeviceArray(const T* host, size_t n) : count(n) {
    if (host == nullptr || n == 0) return;
    cudaMalloc(&ptr, n * sizeof(T));
    cudaMemcpy(ptr, host, n * sizeof(T), cudaMemcpyHostToDevice);
  }
  explicit DeviceArray(size_t n) : count(n) {
    if (n) cudaMalloc(&ptr, n * sizeof(T));
  }
  ~DeviceArray() {
    if (ptr) cudaFree(ptr);
  }
  int CopyTo(T* host) const {
    if (count == 0) return 0;
    return static_cast<int>(cudaMemcpy(host, ptr, count * sizeof(T), cudaMemcpyDeviceToHost));
  }
};

template <typename T>
int Scores(int device, const Dims& d, const T* q, const T* k, const T* gk, const bool* keep, const bool* gkeep,
           T fill, T* out) {
  const size_t rows = d.batch * d.seq * d.heads * d.dim, grows = d.batch * d.num_global * d.heads * d.dim;
  if (device == 0) {
    tfmodels::sliding_window::BandedScores<T>(ThreadFor(), d, q, k, gk, keep, gkeep, fill, out);
    return 0;
  }
  DeviceArray<T> dq(q, rows), dk(k, rows), dgk(gk, grows), dout(d.batch * d.seq * d.heads * d.cols());
  DeviceArray<bool> dkeep(keep, keep ? d.batch * d.seq : 0), dgkeep(gkeep, gkeep ? d.batch * d.num_global : 0);
  int status = tfmodels::sliding_window::LaunchBandedScores<T>(0, d, dq.ptr, dk.ptr, dgk.ptr, dkeep.ptr, dgkeep.ptr,
                                                               fill, dout.ptr);
  if (status == 0) status = static_cast<int>(cudaDeviceSynchronize());
  return status ? status : dout.CopyTo(out);
}

template <typename T>
int Apply(int device, const Dims& d, const T* p, const T* v, const T* gv, const bool* keep, const bool* gkeep,
          T* out) {
  const size_t rows = d.batch * d.seq * d.heads * d.dim, grows = d.batch * d.num_global * d.heads * d.dim;
  if (device == 0) {
    tfmodels::sliding_window::BandedApply<T>(ThreadFor(), d, p, v, gv, keep, gkeep, out);
    return 0;
  }
  DeviceArray<T> dp(p, d.batch * d.seq * d.heads * d.cols()), dv(v, rows), dgv(gv, grows), dout(rows);
  DeviceArray<bool> dkeep(keep, keep ? d.batch * d.seq : 0), dgkeep(gkeep, gkeep ? d.batch * d.num_global : 0);
  int status = tfmodels::sliding_window::LaunchBandedApply<T>(0, d, dp.ptr, dv.ptr, dgv.ptr, dkeep.ptr, dgkeep.ptr,
                                                              dout.ptr);
  if (status == 0) status = static_cast<int>(cudaDeviceSynchronize());
  return status ? status : dout.CopyTo(out);
}

template <typename T>
int ApplyTransposed(int device, const Dims& d, const T* p, const T* u, const bool* keep, T* out) {
  const size_t rows = d.batch * d.seq * d.heads * d.dim;
  if (device == 0) {
    tfmodels::sliding_window::BandedApplyTransposed<T>(ThreadFor(), d, p, u, keep, out);
    return 0;
  }
  DeviceArray<T> dp(p, d.batch * d.seq * d.heads * d.cols()), du(u, rows), dout(rows);
  DeviceArray<bool> dkeep(keep, keep ? d.batch * d.seq : 0);
  int status = tfmodels::sliding_window::LaunchBandedApplyTransposed<T>(0, d, dp.ptr, du.ptr, dkeep.ptr, dout.ptr);
  if (status == 0) status = static_cast<int>(cudaDeviceSynchronize());
  return status ? status : dout.CopyTo(out);
}

template <typename T>
int GlobalApplyTransposed(int device, const Dims& d, const T* p, const T* u, const bool* gkeep, T* out) {
  const size_t rows = d.batch * d.seq * d.heads * d.dim, grows = d.batch * d.num_global * d.heads * d.dim;
  if (device == 0) {
    tfmodels::sliding_window::GlobalApplyTransposed<T>(ThreadFor(), d, p, u, gkeep, out);
    return 0;
  }
  DeviceArray<T> dp(p, d.batch * d.seq * d.heads * d.cols()), du(u, rows), dout(grows);
  DeviceArray<bool> dgkeep(gkeep, gkeep ? d.batch * d.num_global : 0);
  int status = tfmodels::sliding_window::LaunchGlobalApplyTransposed<T>(0, d, dp.ptr, du.ptr, dgkeep.ptr, dout.ptr);
  if (status == 0) status = static_cast<int>(cudaDeviceSynchronize());
  return status ? status : dout.CopyTo(out);
}

}  // namespace

#define TFMODELS_HARNESS_ENTRIES(T, SUFFIX)                                                                    \
  extern "C" int sw_scores_##SUFFIX(int device, int64_t b, int64_t s, int64_t h, int64_t dim, int64_t x,       \
                                    int64_t w, const T* q, const T* k, const T* gk, const bool* keep,          \
                                    const bool* gkeep, T fill, T* out) {                                       \
    return Scores<T>(device, MakeDims(b, s, h, dim, x, w), q, k, gk, keep, gkeep, fill, out);                  \
  }                                                                                                            \
  extern "C" int sw_apply_##SUFFIX(int device, int64_t b, int64_t s, int64_t h, int64_t dim, int64_t x,        \
                                   int64_t w, const T* p, const T* v, const T* gv, const bool* keep,           \
                                   const bool* gkeep, T* out) {                                                \
    return Apply<T>(device, MakeDims(b, s, h, dim, x, w), p, v, gv, keep, gkeep, out);                         \
  }                                                                                                            \
  extern "C" int sw_apply_transposed_##SUFFIX(int device, int64_t b, int64_t s, int64_t h, int64_t dim,        \
                                              int64_t x, int64_t w, const T* p, const T* u, const bool* keep,  \
                                              T* out) {                                                        \
    return ApplyTransposed<T>(device, MakeDims(b, s, h, dim, x, w), p, u, keep, out);                          \
  }                                                                                                            \
  extern "C" int sw_global_apply_transposed_##SUFFIX(int device, int64_t b, int64_t s, int64_t h, int64_t dim, \
                                                     int64_t x, int64_t w, const T* p, const T* u,             \
                                                     const bool* gkeep, T* out) {                              \
    return GlobalApplyTransposed<T>(device, MakeDims(b, s, h, dim, x, w), p, u, gkeep, out);                   \
  }

TFMODELS_HARNESS_ENTRIES(float, f32)
TFMODELS_HARNESS_ENTRIES(double, f64)
