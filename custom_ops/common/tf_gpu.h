// GPU helpers of the TF wrappers: TF's CUDA stream for an op, and launch errors as op failures. Included by the
// *_ops_gpu.cu.cc files only (they define EIGEN_USE_GPU and are built with nvcc under GOOGLE_CUDA).
#ifndef TFMODELS_COMMON_TF_GPU_H_
#define TFMODELS_COMMON_TF_GPU_H_

#include <cuda_runtime.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "unsupported/Eigen/CXX11/Tensor"

namespace tfmodels {

inline cudaStream_t StreamOf(tensorflow::OpKernelContext* ctx) {
  return ctx->eigen_device<Eigen::GpuDevice>().stream();
}

// The inputs were validated before the launch, so a failed launch is the runtime's fault: Internal, not
// InvalidArgument. Returns whether the launch succeeded.
inline bool CheckLaunch(tensorflow::OpKernelContext* ctx, cudaError_t status, const char* what) {
  if (status == cudaSuccess) return true;
  ctx->CtxFailure(__FILE__, __LINE__,
                  absl::InternalError(absl::StrCat(what, ": CUDA launch failed: ", cudaGetErrorString(status))));
  return false;
}

}  // namespace tfmodels

#endif  // TFMODELS_COMMON_TF_GPU_H_
