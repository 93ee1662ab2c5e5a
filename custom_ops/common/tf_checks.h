// Input validation for the TF wrappers: every bad input becomes InvalidArgument with a message naming it,
// never a crash. Use inside OpKernel::Compute.
#ifndef TFMODELS_COMMON_TF_CHECKS_H_
#define TFMODELS_COMMON_TF_CHECKS_H_

#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/tensor.h"

namespace tfmodels {

inline bool CheckRank(tensorflow::OpKernelContext* ctx, const tensorflow::Tensor& t, int rank, const char* name) {
  if (t.dims() != rank) {
    ctx->CtxFailure(__FILE__, __LINE__, absl::InvalidArgumentError(absl::StrCat(
        name, " must have rank ", rank, ", got shape ", t.shape().DebugString())));
    return false;
  }
  return true;
}

inline bool CheckDim(tensorflow::OpKernelContext* ctx, const tensorflow::Tensor& t, int axis, int64_t expected,
                     const char* name, const char* what) {
  if (t.dim_size(axis) != expected) {
    ctx->CtxFailure(__FILE__, __LINE__, absl::InvalidArgumentError(absl::StrCat(
        name, " dimension ", axis, " must be ", expected, " (", what, "), got shape ", t.shape().DebugString())));
    return false;
  }
  return true;
}

inline bool CheckThat(tensorflow::OpKernelContext* ctx, bool condition, const std::string& message) {
  if (!condition) ctx->CtxFailure(__FILE__, __LINE__, absl::InvalidArgumentError(message));
  return condition;
}

// For a helper that returns bool: fails the op with `status` unless it is OK.
inline bool CheckOk(tensorflow::OpKernelContext* ctx, const absl::Status& status) {
  if (!status.ok()) ctx->CtxFailure(__FILE__, __LINE__, status);
  return status.ok();
}

}  // namespace tfmodels

#endif  // TFMODELS_COMMON_TF_CHECKS_H_
