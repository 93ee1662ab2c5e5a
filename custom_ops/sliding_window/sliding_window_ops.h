// TF side of the sliding-window ops shared by the OpKernels (sliding_window_ops.cc) and the GPU functor
// (sliding_window_ops_gpu.cu.cc): input validation, where every inconsistency becomes an InvalidArgument error
// naming the input, never a crash; and the per-device functors.
#ifndef TFMODELS_SLIDING_WINDOW_OPS_H_
#define TFMODELS_SLIDING_WINDOW_OPS_H_

#include <limits>

#include "absl/strings/str_cat.h"
#include "common/devices.h"
#include "common/tf_checks.h"
#include "sliding_window/sliding_window_kernels.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/tensor.h"

namespace tfmodels {
namespace sliding_window {

using ::tensorflow::OpKernelContext;
using ::tensorflow::Tensor;

inline bool ValidateQK(OpKernelContext* ctx, int64_t window, int first, Dims* dims) {
  const Tensor& query = ctx->input(first);
  const Tensor& key = ctx->input(first + 1);
  const Tensor& key_keep = ctx->input(first + 2);
  const Tensor& global_key = ctx->input(first + 3);
  const Tensor& global_keep = ctx->input(first + 4);
  if (!CheckRank(ctx, query, 4, "query") || !CheckRank(ctx, key, 4, "key") ||
      !CheckRank(ctx, key_keep, 2, "key_keep") || !CheckRank(ctx, global_key, 4, "global_key") ||
      !CheckRank(ctx, global_keep, 2, "global_keep"))
    return false;
  if (!CheckThat(ctx, query.shape() == key.shape(),
                 absl::StrCat("query and key must have the same shape [batch, seq, heads, dim], got ",
                              query.shape().DebugString(), " and ", key.shape().DebugString())))
    return false;
  dims->batch = query.dim_size(0);
  dims->seq = query.dim_size(1);
  dims->heads = query.dim_size(2);
  dims->dim = query.dim_size(3);
  dims->num_global = global_key.dim_size(1);
  dims->window = window;
  return CheckDim(ctx, key_keep, 0, dims->batch, "key_keep", "batch") &&
         CheckDim(ctx, key_keep, 1, dims->seq, "key_keep", "sequence length") &&
         CheckDim(ctx, global_key, 0, dims->batch, "global_key", "batch") &&
         CheckDim(ctx, global_key, 2, dims->heads, "global_key", "heads") &&
         CheckDim(ctx, global_key, 3, dims->dim, "global_key", "head size") &&
         CheckDim(ctx, global_keep, 0, dims->batch, "global_keep", "batch") &&
         CheckDim(ctx, global_keep, 1, dims->num_global, "global_keep", "number of global keys") &&
         CheckThat(ctx, window >= 0, absl::StrCat("window must be >= 0, got ", window));
}

inline bool ValidatePV(OpKernelContext* ctx, int first, Dims* dims) {
  const Tensor& probs = ctx->input(first);
  const Tensor& value = ctx->input(first + 1);
  const Tensor& global_value = ctx->input(first + 2);
  if (!CheckRank(ctx, probs, 4, "probs") || !CheckRank(ctx, value, 4, "value") ||
      !CheckRank(ctx, global_value, 4, "global_value"))
    return false;
  dims->batch = value.dim_size(0);
  dims->seq = value.dim_size(1);
  dims->heads = value.dim_size(2);
  dims->dim = value.dim_size(3);
  dims->num_global = global_value.dim_size(1);
  if (!CheckDim(ctx, probs, 0, dims->batch, "probs", "batch of value") ||
      !CheckDim(ctx, probs, 1, dims->seq, "probs", "sequence length of value") ||
      !CheckDim(ctx, probs, 2, dims->heads, "probs", "heads of value") ||
      !CheckDim(ctx, global_value, 0, dims->batch, "global_value", "batch") ||
      !CheckDim(ctx, global_value, 2, dims->heads, "global_value", "heads") ||
      !CheckDim(ctx, global_value, 3, dims->dim, "global_value", "head size"))
    return false;
  const int64_t band = probs.dim_size(3) - dims->num_global;
  if (!CheckThat(ctx, band >= 1 && band % 2 == 1,
                 absl::StrCat("probs must have X + 2w + 1 columns (X = ", dims->num_global,
                              " global keys, odd band 2w + 1), got ", probs.dim_size(3))))
    return false;
  dims->window = (band - 1) / 2;
  return true;
}

template <typename T>
T LowestValue() {
  return std::numeric_limits<T>::lowest();
}

// The four banded products of the ops on one device (semantics: sliding_window_kernels.h), on validated
// inputs. Each returns false after failing the op. SlidingWindowFunctor<CpuDevice, T> is in
// sliding_window_ops.cc, SlidingWindowFunctor<GpuDevice, T> in sliding_window_ops_gpu.cu.cc.
template <typename Device, typename T>
struct SlidingWindowFunctor;

#if GOOGLE_CUDA
template <typename T>
struct SlidingWindowFunctor<GpuDevice, T> {
  static bool Scores(OpKernelContext* ctx, const Dims& dims, const T* query, const T* key, const T* global_key,
                     const bool* key_keep, const bool* global_keep, T fill, T* out);
  static bool Apply(OpKernelContext* ctx, const Dims& dims, const T* probs, const T* value, const T* global_value,
                    const bool* key_keep, const bool* global_keep, T* out);
  static bool ApplyTransposed(OpKernelContext* ctx, const Dims& dims, const T* probs, const T* grad,
                              const bool* key_keep, T* out);
  static bool GlobalApplyTransposed(OpKernelContext* ctx, const Dims& dims, const T* probs, const T* grad,
                                    const bool* global_keep, T* out);
};
#endif  // GOOGLE_CUDA

}  // namespace sliding_window
}  // namespace tfmodels

#endif  // TFMODELS_SLIDING_WINDOW_OPS_H_
