// CUDA helpers shared by the kernels (TF-free: included by the TF GPU wrappers and by the test harness).
#ifndef TFMODELS_COMMON_CUDA_UTILS_CUH_
#define TFMODELS_COMMON_CUDA_UTILS_CUH_

#include <cstdint>
#include <cuda_runtime.h>

namespace tfmodels {

// Grid-stride loop over [0, n).
#define TFMODELS_CUDA_LOOP(i, n) \
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < (n); \
       i += static_cast<int64_t>(blockDim.x) * gridDim.x)

inline int BlocksFor(int64_t n, int threads = 256) {
  const int64_t blocks = (n + threads - 1) / threads;
  return static_cast<int>(blocks < 65535 ? (blocks > 0 ? blocks : 1) : 65535);
}

}  // namespace tfmodels

#endif  // TFMODELS_COMMON_CUDA_UTILS_CUH_
