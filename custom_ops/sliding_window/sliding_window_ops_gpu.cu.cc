// GPU kernels of the sliding-window ops (registered with the ops in sliding_window_ops.cc): the same input
// validation as the CPU kernels, then the CUDA kernels of sliding_window_kernels.cuh on TF's stream.
#if GOOGLE_CUDA
#define EIGEN_USE_GPU

#include "absl/strings/str_cat.h"
#include "sliding_window/sliding_window_kernels.cuh"
#include "sliding_window/sliding_window_ops.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/register_types.h"
#include "unsupported/Eigen/CXX11/Tensor"

namespace tfmodels {
namespace sliding_window {

using ::tensorflow::DEVICE_GPU;
using ::tensorflow::OpKernel;
using ::tensorflow::OpKernelConstruction;
using ::tensorflow::TensorShape;

inline cudaStream_t StreamOf(OpKernelContext* ctx) { return ctx->eigen_device<Eigen::GpuDevice>().stream(); }

inline void CheckLaunch(OpKernelContext* ctx, cudaError_t status, const char* what) {
  if (status != cudaSuccess)
    ctx->CtxFailure(__FILE__, __LINE__, absl::InternalError(absl::StrCat(what, ": ", cudaGetErrorString(status))));
}

template <typename T>
class SlidingWindowQKGpuOp : public OpKernel {
 public:
  explicit SlidingWindowQKGpuOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("window", &window_));
  }
  void Compute(OpKernelContext* ctx) override {
    Dims dims;
    if (!ValidateQK(ctx, window_, 0, &dims)) return;
    Tensor* scores = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({dims.batch, dims.seq, dims.heads, dims.cols()}),
                                             &scores));
    CheckLaunch(ctx,
                LaunchBandedScores<T>(StreamOf(ctx), dims, ctx->input(0).flat<T>().data(),
                                      ctx->input(1).flat<T>().data(), ctx->input(3).flat<T>().data(),
                                      ctx->input(2).flat<bool>().data(), ctx->input(4).flat<bool>().data(),
                                      LowestValue<T>(), scores->flat<T>().data()),
                "SlidingWindowQK");
  }

 private:
  int window_;
};

template <typename T>
class SlidingWindowQKGradGpuOp : public OpKernel {
 public:
  explicit SlidingWindowQKGradGpuOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("window", &window_));
  }
  void Compute(OpKernelContext* ctx) override {
    Dims dims;
    if (!ValidateQK(ctx, window_, 1, &dims)) return;
    const Tensor& grad = ctx->input(0);
    OP_REQUIRES(ctx, grad.shape() == TensorShape({dims.batch, dims.seq, dims.heads, dims.cols()}),
                absl::InvalidArgumentError(absl::StrCat("grad must have the shape of the scores, got ",
                                                        grad.shape().DebugString())));
    Tensor *grad_query = nullptr, *grad_key = nullptr, *grad_global_key = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, ctx->input(1).shape(), &grad_query));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, ctx->input(2).shape(), &grad_key));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, ctx->input(4).shape(), &grad_global_key));
    const T* g = grad.flat<T>().data();
    const T* query = ctx->input(1).flat<T>().data();
    const T* key = ctx->input(2).flat<T>().data();
    const bool* key_keep = ctx->input(3).flat<bool>().data();
    const T* global_key = ctx->input(4).flat<T>().data();
    const bool* global_keep = ctx->input(5).flat<bool>().data();
    cudaStream_t stream = StreamOf(ctx);
    CheckLaunch(ctx, LaunchBandedApply<T>(stream, dims, g, key, global_key, key_keep, global_keep,
                                          grad_query->flat<T>().data()), "SlidingWindowQKGrad");
    CheckLaunch(ctx, LaunchBandedApplyTransposed<T>(stream, dims, g, query, key_keep, grad_key->flat<T>().data()),
                "SlidingWindowQKGrad");
    CheckLaunch(ctx, LaunchGlobalApplyTransposed<T>(stream, dims, g, query, global_keep,
                                                    grad_global_key->flat<T>().data()), "SlidingWindowQKGrad");
  }

 private:
  int window_;
};

template <typename T>
class SlidingWindowPVGpuOp : public OpKernel {
 public:
  explicit SlidingWindowPVGpuOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}
  void Compute(OpKernelContext* ctx) override {
    Dims dims;
    if (!ValidatePV(ctx, 0, &dims)) return;
    Tensor* output = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, ctx->input(1).shape(), &output));
    CheckLaunch(ctx,
                LaunchBandedApply<T>(StreamOf(ctx), dims, ctx->input(0).flat<T>().data(),
                                     ctx->input(1).flat<T>().data(), ctx->input(2).flat<T>().data(), nullptr,
                                     nullptr, output->flat<T>().data()),
                "SlidingWindowPV");
  }
};

template <typename T>
class SlidingWindowPVGradGpuOp : public OpKernel {
 public:
  explicit SlidingWindowPVGradGpuOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}
  void Compute(OpKernelContext* ctx) override {
    Dims dims;
    if (!ValidatePV(ctx, 1, &dims)) return;
    const Tensor& grad = ctx->input(0);
    OP_REQUIRES(ctx, grad.shape() == ctx->input(2).shape(),
                absl::InvalidArgumentError(absl::StrCat("grad must have the shape of the output (value), got ",
                                                        grad.shape().DebugString())));
    Tensor *grad_probs = nullptr, *grad_value = nullptr, *grad_global_value = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, ctx->input(1).shape(), &grad_probs));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, ctx->input(2).shape(), &grad_value));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, ctx->input(3).shape(), &grad_global_value));
    const T* g = grad.flat<T>().data();
    const T* probs = ctx->input(1).flat<T>().data();
    const T* value = ctx->input(2).flat<T>().data();
    const T* global_value = ctx->input(3).flat<T>().data();
    cudaStream_t stream = StreamOf(ctx);
    CheckLaunch(ctx, LaunchBandedScores<T>(stream, dims, g, value, global_value, nullptr, nullptr, T(0.0f),
                                           grad_probs->flat<T>().data()), "SlidingWindowPVGrad");
    CheckLaunch(ctx, LaunchBandedApplyTransposed<T>(stream, dims, probs, g, nullptr,
                                                    grad_value->flat<T>().data()), "SlidingWindowPVGrad");
    CheckLaunch(ctx, LaunchGlobalApplyTransposed<T>(stream, dims, probs, g, nullptr,
                                                    grad_global_value->flat<T>().data()), "SlidingWindowPVGrad");
  }
};

#define TFMODELS_REGISTER_GPU(T)                                                                            \
  REGISTER_KERNEL_BUILDER(Name("TFModels>SlidingWindowQK").Device(DEVICE_GPU).TypeConstraint<T>("T"),       \
                          SlidingWindowQKGpuOp<T>);                                                        \
  REGISTER_KERNEL_BUILDER(Name("TFModels>SlidingWindowQKGrad").Device(DEVICE_GPU).TypeConstraint<T>("T"),   \
                          SlidingWindowQKGradGpuOp<T>);                                                    \
  REGISTER_KERNEL_BUILDER(Name("TFModels>SlidingWindowPV").Device(DEVICE_GPU).TypeConstraint<T>("T"),       \
                          SlidingWindowPVGpuOp<T>);                                                        \
  REGISTER_KERNEL_BUILDER(Name("TFModels>SlidingWindowPVGrad").Device(DEVICE_GPU).TypeConstraint<T>("T"),   \
                          SlidingWindowPVGradGpuOp<T>);

TFMODELS_REGISTER_GPU(float);
TFMODELS_REGISTER_GPU(double);
TFMODELS_REGISTER_GPU(Eigen::half);
TFMODELS_REGISTER_GPU(Eigen::bfloat16);
#undef TFMODELS_REGISTER_GPU

}  // namespace sliding_window
}  // namespace tfmodels

#endif  // GOOGLE_CUDA
