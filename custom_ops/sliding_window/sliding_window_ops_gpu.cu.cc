// The GPU functor of the sliding-window ops (the OpKernels, with their input validation, are in
// sliding_window_ops.cc): the CUDA kernels of sliding_window_kernels.cuh on TF's stream.
#if GOOGLE_CUDA
#define EIGEN_USE_GPU

#include "common/tf_gpu.h"
#include "sliding_window/sliding_window_kernels.cuh"
#include "sliding_window/sliding_window_ops.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/register_types.h"

namespace tfmodels {
namespace sliding_window {

template <typename T>
bool SlidingWindowFunctor<GpuDevice, T>::Scores(OpKernelContext* ctx, const Dims& dims, const T* query,
                                                const T* key, const T* global_key, const bool* key_keep,
                                                const bool* global_keep, T fill, T* out) {
  return CheckLaunch(ctx, LaunchBandedScores<T>(StreamOf(ctx), dims, query, key, global_key, key_keep, global_keep,
                                                fill, out),
                     "sliding-window banded scores");
}

template <typename T>
bool SlidingWindowFunctor<GpuDevice, T>::Apply(OpKernelContext* ctx, const Dims& dims, const T* probs,
                                               const T* value, const T* global_value, const bool* key_keep,
                                               const bool* global_keep, T* out) {
  return CheckLaunch(ctx, LaunchBandedApply<T>(StreamOf(ctx), dims, probs, value, global_value, key_keep,
                                               global_keep, out),
                     "sliding-window banded product");
}

template <typename T>
bool SlidingWindowFunctor<GpuDevice, T>::ApplyTransposed(OpKernelContext* ctx, const Dims& dims, const T* probs,
                                                         const T* grad, const bool* key_keep, T* out) {
  return CheckLaunch(ctx, LaunchBandedApplyTransposed<T>(StreamOf(ctx), dims, probs, grad, key_keep, out),
                     "sliding-window transposed banded product");
}

template <typename T>
bool SlidingWindowFunctor<GpuDevice, T>::GlobalApplyTransposed(OpKernelContext* ctx, const Dims& dims,
                                                               const T* probs, const T* grad,
                                                               const bool* global_keep, T* out) {
  return CheckLaunch(ctx, LaunchGlobalApplyTransposed<T>(StreamOf(ctx), dims, probs, grad, global_keep, out),
                     "sliding-window transposed global product");
}

template struct SlidingWindowFunctor<GpuDevice, float>;
template struct SlidingWindowFunctor<GpuDevice, double>;
template struct SlidingWindowFunctor<GpuDevice, Eigen::half>;
template struct SlidingWindowFunctor<GpuDevice, Eigen::bfloat16>;

}  // namespace sliding_window
}  // namespace tfmodels

#endif  // GOOGLE_CUDA
