// TensorFlow ops of the sliding-window (Longformer) attention products: op registrations with shape
// functions, one OpKernel<Device, T> per op (input validation for both devices) and the CPU functor
// (multi-threaded through TF's intra-op thread pool). The GPU functor is in sliding_window_ops_gpu.cu.cc; the
// arithmetic is in sliding_window_kernels.h (.cuh).
//
//   TFModels>SlidingWindowQK(query, key, key_keep, global_key, global_keep; window) -> scores
//       query, key [B, S, H, D]; key_keep [B, S] bool; global_key [B, X, H, D]; global_keep [B, X] bool.
//       scores [B, S, H, X + 2w + 1]: column c < X holds query . global_key[c], column X + j holds
//       query_i . key_{i+j-w}; entries whose key is out of range or not kept hold the dtype's lowest value.
//   TFModels>SlidingWindowPV(probs, value, global_value) -> output
//       probs [B, S, H, X + 2w + 1] (w from the last dimension), value [B, S, H, D], global_value [B, X, H, D];
//       output_i = sum_c probs[i, c] global_value_c + sum_j probs[i, X + j] value_{i+j-w} (in range).
//   TFModels>SlidingWindowQKGrad, TFModels>SlidingWindowPVGrad: their gradients (all inputs at once).
//   TFModels>SlidingWindowAttention(query, key, key_keep, global_key, global_keep, value, global_value; window)
//       -> output [B, S, H, D]: SlidingWindowPV(softmax(SlidingWindowQK(...)), value, global_value) in one pass
//       (banded_attention.h), zero in the rows whose key_keep is false, CPU only, float32 and bfloat16. No gradient op: tfmodels.ops.sliding_window
//       differentiates the three-op composition instead.
#include <algorithm>
#include <type_traits>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/tf_checks.h"
#include "common/tf_parallel.h"
#include "sliding_window/banded_attention.h"
#include "sliding_window/sliding_window_kernels.h"
#include "sliding_window/sliding_window_ops.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/register_types.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace tfmodels {
namespace sliding_window {

using ::tensorflow::DEVICE_CPU;
using ::tensorflow::DEVICE_GPU;
using ::tensorflow::OpKernel;
using ::tensorflow::OpKernelConstruction;
using ::tensorflow::OpKernelContext;
using ::tensorflow::Tensor;
using ::tensorflow::TensorShape;
using ::tensorflow::shape_inference::DimensionHandle;
using ::tensorflow::shape_inference::InferenceContext;
using ::tensorflow::shape_inference::ShapeHandle;

// ---------------------------------------------------------------------------------------------------------
// Shape functions

absl::Status QKShape(InferenceContext* c) {
  int window;
  TF_RETURN_IF_ERROR(c->GetAttr("window", &window));
  ShapeHandle query, key, key_keep, global_key, global_keep;
  TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 4, &query));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 4, &key));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(2), 2, &key_keep));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(3), 4, &global_key));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(4), 2, &global_keep));
  TF_RETURN_IF_ERROR(c->Merge(query, key, &query));
  ShapeHandle prefix;
  TF_RETURN_IF_ERROR(c->Subshape(query, 0, 2, &prefix));
  TF_RETURN_IF_ERROR(c->Merge(prefix, key_keep, &prefix));
  DimensionHandle num_global = c->Dim(global_key, 1);
  TF_RETURN_IF_ERROR(c->Merge(num_global, c->Dim(global_keep, 1), &num_global));
  DimensionHandle columns;
  TF_RETURN_IF_ERROR(c->Add(num_global, 2 * static_cast<int64_t>(window) + 1, &columns));
  c->set_output(0, c->MakeShape({c->Dim(query, 0), c->Dim(query, 1), c->Dim(query, 2), columns}));
  return absl::OkStatus();
}

absl::Status PVShape(InferenceContext* c) {
  ShapeHandle probs, value, global_value;
  TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 4, &probs));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 4, &value));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(2), 4, &global_value));
  ShapeHandle prefix, value_prefix;
  TF_RETURN_IF_ERROR(c->Subshape(probs, 0, 3, &prefix));
  TF_RETURN_IF_ERROR(c->Subshape(value, 0, 3, &value_prefix));
  TF_RETURN_IF_ERROR(c->Merge(prefix, value_prefix, &prefix));
  ShapeHandle output;
  TF_RETURN_IF_ERROR(c->Concatenate(prefix, c->Vector(c->Dim(value, 3)), &output));
  c->set_output(0, output);
  return absl::OkStatus();
}

absl::Status AttentionShape(InferenceContext* c) {
  ShapeHandle query, key, value;
  TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 4, &query));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 4, &key));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(5), 4, &value));
  TF_RETURN_IF_ERROR(c->Merge(query, key, &query));
  TF_RETURN_IF_ERROR(c->Merge(query, value, &query));
  c->set_output(0, query);
  return absl::OkStatus();
}

absl::Status QKGradShape(InferenceContext* c) {
  c->set_output(0, c->input(1));
  c->set_output(1, c->input(2));
  c->set_output(2, c->input(4));
  return absl::OkStatus();
}

absl::Status PVGradShape(InferenceContext* c) {
  c->set_output(0, c->input(1));
  c->set_output(1, c->input(2));
  c->set_output(2, c->input(3));
  return absl::OkStatus();
}

}  // namespace sliding_window
}  // namespace tfmodels

REGISTER_OP("TFModels>SlidingWindowQK")
    .Input("query: T")
    .Input("key: T")
    .Input("key_keep: bool")
    .Input("global_key: T")
    .Input("global_keep: bool")
    .Output("scores: T")
    .Attr("window: int >= 0")
    .Attr("T: {half, bfloat16, float, double}")
    .SetShapeFn(tfmodels::sliding_window::QKShape)
    .Doc("Banded query.key products of sliding-window attention, with global-key columns first.");

REGISTER_OP("TFModels>SlidingWindowQKGrad")
    .Input("grad: T")
    .Input("query: T")
    .Input("key: T")
    .Input("key_keep: bool")
    .Input("global_key: T")
    .Input("global_keep: bool")
    .Output("grad_query: T")
    .Output("grad_key: T")
    .Output("grad_global_key: T")
    .Attr("window: int >= 0")
    .Attr("T: {half, bfloat16, float, double}")
    .SetShapeFn(tfmodels::sliding_window::QKGradShape);

REGISTER_OP("TFModels>SlidingWindowPV")
    .Input("probs: T")
    .Input("value: T")
    .Input("global_value: T")
    .Output("output: T")
    .Attr("T: {half, bfloat16, float, double}")
    .SetShapeFn(tfmodels::sliding_window::PVShape)
    .Doc("Banded probabilities x values of sliding-window attention, with global-value columns first.");

REGISTER_OP("TFModels>SlidingWindowAttention")
    .Input("query: T")
    .Input("key: T")
    .Input("key_keep: bool")
    .Input("global_key: T")
    .Input("global_keep: bool")
    .Input("value: T")
    .Input("global_value: T")
    .Output("output: T")
    .Attr("window: int >= 0")
    .Attr("T: {bfloat16, float}")
    .SetShapeFn(tfmodels::sliding_window::AttentionShape)
    .Doc("Sliding-window attention (SlidingWindowQK, softmax, SlidingWindowPV) in one pass, CPU inference; the rows "
         "whose key_keep is false are zero.");

REGISTER_OP("TFModels>SlidingWindowPVGrad")
    .Input("grad: T")
    .Input("probs: T")
    .Input("value: T")
    .Input("global_value: T")
    .Output("grad_probs: T")
    .Output("grad_value: T")
    .Output("grad_global_value: T")
    .Attr("T: {half, bfloat16, float, double}")
    .SetShapeFn(tfmodels::sliding_window::PVGradShape);

namespace tfmodels {
namespace sliding_window {

// ---------------------------------------------------------------------------------------------------------
// CPU kernels

// Scratch memory for BandedScores (the transposed keys), from TF's allocator.
template <typename T>
typename AccType<T>::type* ScoresWorkspace(OpKernelContext* ctx, const Dims& dims, Tensor* holder) {
  using A = typename AccType<T>::type;
  const auto dtype = std::is_same<A, double>::value ? tensorflow::DT_DOUBLE : tensorflow::DT_FLOAT;
  const int64_t size = std::max<int64_t>(1, BandedScoresWorkspace<T>(dims));
  if (!ctx->allocate_temp(dtype, TensorShape({size}), holder).ok()) {
    ctx->CtxFailure(__FILE__, __LINE__, absl::ResourceExhaustedError("cannot allocate the scores workspace"));
    return nullptr;
  }
  return reinterpret_cast<A*>(holder->data());
}

template <typename T>
struct SlidingWindowFunctor<CpuDevice, T> {
  static bool Scores(OpKernelContext* ctx, const Dims& dims, const T* query, const T* key, const T* global_key,
                     const bool* key_keep, const bool* global_keep, T fill, T* out) {
    Tensor workspace;
    auto* scratch = ScoresWorkspace<T>(ctx, dims, &workspace);
    if (scratch == nullptr) return false;
    BandedScores<T>(TfParallelFor(ctx), dims, query, key, global_key, key_keep, global_keep, fill, out, scratch);
    return true;
  }
  static bool Apply(OpKernelContext* ctx, const Dims& dims, const T* probs, const T* value, const T* global_value,
                    const bool* key_keep, const bool* global_keep, T* out) {
    BandedApply<T>(TfParallelFor(ctx), dims, probs, value, global_value, key_keep, global_keep, out);
    return true;
  }
  static bool ApplyTransposed(OpKernelContext* ctx, const Dims& dims, const T* probs, const T* grad,
                              const bool* key_keep, T* out) {
    BandedApplyTransposed<T>(TfParallelFor(ctx), dims, probs, grad, key_keep, out);
    return true;
  }
  static bool GlobalApplyTransposed(OpKernelContext* ctx, const Dims& dims, const T* probs, const T* grad,
                                    const bool* global_keep, T* out) {
    sliding_window::GlobalApplyTransposed<T>(TfParallelFor(ctx), dims, probs, grad, global_keep, out);
    return true;
  }
};

// ---------------------------------------------------------------------------------------------------------
// OpKernels (both devices)

template <typename Device, typename T>
class SlidingWindowQKOp : public OpKernel {
 public:
  explicit SlidingWindowQKOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("window", &window_));
  }
  void Compute(OpKernelContext* ctx) override {
    Dims dims;
    if (!ValidateQK(ctx, window_, 0, &dims)) return;
    Tensor* scores = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({dims.batch, dims.seq, dims.heads, dims.cols()}),
                                             &scores));
    SlidingWindowFunctor<Device, T>::Scores(ctx, dims, ctx->input(0).flat<T>().data(), ctx->input(1).flat<T>().data(),
                                            ctx->input(3).flat<T>().data(), ctx->input(2).flat<bool>().data(),
                                            ctx->input(4).flat<bool>().data(), LowestValue<T>(),
                                            scores->flat<T>().data());
  }

 private:
  int window_;
};

template <typename Device, typename T>
class SlidingWindowQKGradOp : public OpKernel {
 public:
  explicit SlidingWindowQKGradOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
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
    using F = SlidingWindowFunctor<Device, T>;
    F::Apply(ctx, dims, g, key, global_key, key_keep, global_keep, grad_query->flat<T>().data()) &&
        F::ApplyTransposed(ctx, dims, g, query, key_keep, grad_key->flat<T>().data()) &&
        F::GlobalApplyTransposed(ctx, dims, g, query, global_keep, grad_global_key->flat<T>().data());
  }

 private:
  int window_;
};

template <typename Device, typename T>
class SlidingWindowPVOp : public OpKernel {
 public:
  explicit SlidingWindowPVOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}
  void Compute(OpKernelContext* ctx) override {
    Dims dims;
    if (!ValidatePV(ctx, 0, &dims)) return;
    Tensor* output = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, ctx->input(1).shape(), &output));
    SlidingWindowFunctor<Device, T>::Apply(ctx, dims, ctx->input(0).flat<T>().data(), ctx->input(1).flat<T>().data(),
                                           ctx->input(2).flat<T>().data(), nullptr, nullptr,
                                           output->flat<T>().data());
  }
};

template <typename Device, typename T>
class SlidingWindowPVGradOp : public OpKernel {
 public:
  explicit SlidingWindowPVGradOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}
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
    using F = SlidingWindowFunctor<Device, T>;
    F::Scores(ctx, dims, g, value, global_value, nullptr, nullptr, T(0.0f), grad_probs->flat<T>().data()) &&
        F::ApplyTransposed(ctx, dims, probs, g, nullptr, grad_value->flat<T>().data()) &&
        F::GlobalApplyTransposed(ctx, dims, probs, g, nullptr, grad_global_value->flat<T>().data());
  }
};

// Inputs: SlidingWindowQK's (validated by ValidateQK), then value (the shape of query) and global_value (the shape
// of global_key).
template <typename T>
class SlidingWindowAttentionOp : public OpKernel {
 public:
  explicit SlidingWindowAttentionOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("window", &window_));
  }
  void Compute(OpKernelContext* ctx) override {
    Dims dims;
    if (!ValidateQK(ctx, window_, 0, &dims)) return;
    const Tensor& query = ctx->input(0);
    const Tensor& global_key = ctx->input(3);
    const Tensor& value = ctx->input(5);
    const Tensor& global_value = ctx->input(6);
    if (!CheckThat(ctx, value.shape() == query.shape(),
                   absl::StrCat("value must have the shape of query ", query.shape().DebugString(), ", got ",
                                value.shape().DebugString())) ||
        !CheckThat(ctx, global_value.shape() == global_key.shape(),
                   absl::StrCat("global_value must have the shape of global_key ", global_key.shape().DebugString(),
                                ", got ", global_value.shape().DebugString()))) {
      return;
    }
    Tensor* output = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, query.shape(), &output));
    if (output->NumElements() == 0) return;
    Tensor workspace;
    OP_REQUIRES_OK(ctx, ctx->allocate_temp(tensorflow::DT_FLOAT, TensorShape({BandedScoresWorkspace<T>(dims)}),
                                           &workspace));
    BandedAttention<T>(TfParallelFor(ctx), dims, query.flat<T>().data(), ctx->input(1).flat<T>().data(),
                       value.flat<T>().data(), global_key.flat<T>().data(), global_value.flat<T>().data(),
                       ctx->input(2).flat<bool>().data(), ctx->input(4).flat<bool>().data(),
                       workspace.flat<float>().data(), output->flat<T>().data());
  }

 private:
  int window_;
};

REGISTER_KERNEL_BUILDER(Name("TFModels>SlidingWindowAttention").Device(DEVICE_CPU).TypeConstraint<float>("T"),
                        SlidingWindowAttentionOp<float>);
REGISTER_KERNEL_BUILDER(
    Name("TFModels>SlidingWindowAttention").Device(DEVICE_CPU).TypeConstraint<Eigen::bfloat16>("T"),
    SlidingWindowAttentionOp<Eigen::bfloat16>);

#define TFMODELS_REGISTER(DEVICE_NAME, Tag, T)                                                                \
  REGISTER_KERNEL_BUILDER(Name("TFModels>SlidingWindowQK").Device(DEVICE_NAME).TypeConstraint<T>("T"),        \
                          SlidingWindowQKOp<Tag, T>);                                                         \
  REGISTER_KERNEL_BUILDER(Name("TFModels>SlidingWindowQKGrad").Device(DEVICE_NAME).TypeConstraint<T>("T"),    \
                          SlidingWindowQKGradOp<Tag, T>);                                                     \
  REGISTER_KERNEL_BUILDER(Name("TFModels>SlidingWindowPV").Device(DEVICE_NAME).TypeConstraint<T>("T"),        \
                          SlidingWindowPVOp<Tag, T>);                                                         \
  REGISTER_KERNEL_BUILDER(Name("TFModels>SlidingWindowPVGrad").Device(DEVICE_NAME).TypeConstraint<T>("T"),    \
                          SlidingWindowPVGradOp<Tag, T>);

TFMODELS_REGISTER(DEVICE_CPU, CpuDevice, float);
TFMODELS_REGISTER(DEVICE_CPU, CpuDevice, double);
TFMODELS_REGISTER(DEVICE_CPU, CpuDevice, Eigen::half);
TFMODELS_REGISTER(DEVICE_CPU, CpuDevice, Eigen::bfloat16);
#if GOOGLE_CUDA
TFMODELS_REGISTER(DEVICE_GPU, GpuDevice, float);
TFMODELS_REGISTER(DEVICE_GPU, GpuDevice, double);
TFMODELS_REGISTER(DEVICE_GPU, GpuDevice, Eigen::half);
TFMODELS_REGISTER(DEVICE_GPU, GpuDevice, Eigen::bfloat16);
#endif  // GOOGLE_CUDA
#undef TFMODELS_REGISTER

}  // namespace sliding_window
}  // namespace tfmodels
