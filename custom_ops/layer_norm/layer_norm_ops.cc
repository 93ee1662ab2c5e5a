// Fused layer normalisation for bfloat16 and float32 CPU inference.
//
//   TFModels>LayerNorm(x, gamma, beta; epsilon) -> y
//       x [..., n] bfloat16 or float32; gamma, beta [n] float32 (Keras casts them to float32 too); y like x,
//       normalised over its last axis in float32 (layer_norm_kernels.h) and rounded once.
//
// Why: Keras' LayerNormalization is about ten TensorFlow ops (casts to and from float32, two means, a squared
// difference, rsqrt, multiplies and adds), each a pass over the whole tensor in memory; on a [1024, 2560]
// bfloat16 input that took ~13 ms eagerly on a 2-core Xeon, a tenth of a 3.5B-parameter model's forward pass,
// where this op reads and writes the tensor once. In float32 Keras' passes cost ~3x this op's one (a [4096, 256]
// tensor in a graph on a 2-core EPYC: ~1.2 ms against ~0.4 ms). There is no gradient op: tfmodels.ops.layer_norm recomputes
// the backward pass with Keras' layer.
#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/tf_checks.h"
#include "common/tf_parallel.h"
#include "layer_norm/layer_norm_kernels.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace tfmodels {
namespace layer_norm {

using ::tensorflow::OpKernel;
using ::tensorflow::OpKernelConstruction;
using ::tensorflow::OpKernelContext;
using ::tensorflow::Tensor;

// T: tensorflow::bfloat16 (computed on its bits) or float.
template <typename T>
class LayerNormOp : public OpKernel {
 public:
  explicit LayerNormOp(OpKernelConstruction* context) : OpKernel(context) {
    OP_REQUIRES_OK(context, context->GetAttr("epsilon", &epsilon_));
  }

  void Compute(OpKernelContext* context) override {
    const Tensor& x = context->input(0);
    const Tensor& gamma = context->input(1);
    const Tensor& beta = context->input(2);
    if (!CheckThat(context, x.dims() >= 1,
                   absl::StrCat("x must have rank >= 1, got shape ", x.shape().DebugString())) ||
        !CheckRank(context, gamma, 1, "gamma") || !CheckRank(context, beta, 1, "beta")) {
      return;
    }
    const int64_t n = x.dim_size(x.dims() - 1);
    if (!CheckDim(context, gamma, 0, n, "gamma", "the size of x's last axis") ||
        !CheckDim(context, beta, 0, n, "beta", "the size of x's last axis")) {
      return;
    }
    Tensor* output = nullptr;
    OP_REQUIRES_OK(context, context->allocate_output(0, x.shape(), &output));
    if (x.NumElements() == 0) return;
    const int64_t rows = x.NumElements() / n;
    using E = std::conditional_t<std::is_same_v<T, float>, float, uint16_t>;
    const auto* in = reinterpret_cast<const E*>(x.flat<T>().data());
    auto* out = reinterpret_cast<E*>(output->flat<T>().data());
    const float* g = gamma.flat<float>().data();
    const float* b = beta.flat<float>().data();
    const float epsilon = epsilon_;
    TfParallelFor parallel_for(context);
    parallel_for(rows, n * 12, [&](int64_t begin, int64_t end) {
      std::vector<float> row(n);
      NormaliseRows(in, g, b, epsilon, n, begin, end, row.data(), out);
    });
  }

 private:
  float epsilon_;
};

REGISTER_OP("TFModels>LayerNorm")
    .Input("x: T")
    .Input("gamma: float")
    .Input("beta: float")
    .Output("y: T")
    .Attr("epsilon: float")
    .Attr("T: {bfloat16, float}")
    .SetShapeFn([](::tensorflow::shape_inference::InferenceContext* c) {
      ::tensorflow::shape_inference::ShapeHandle x;
      TF_RETURN_IF_ERROR(c->WithRankAtLeast(c->input(0), 1, &x));
      c->set_output(0, x);
      return absl::OkStatus();
    });

REGISTER_KERNEL_BUILDER(Name("TFModels>LayerNorm").Device(::tensorflow::DEVICE_CPU).TypeConstraint<float>("T"),
                        LayerNormOp<float>);
REGISTER_KERNEL_BUILDER(
    Name("TFModels>LayerNorm").Device(::tensorflow::DEVICE_CPU).TypeConstraint<tensorflow::bfloat16>("T"),
    LayerNormOp<tensorflow::bfloat16>);

}  // namespace layer_norm
}  // namespace tfmodels
