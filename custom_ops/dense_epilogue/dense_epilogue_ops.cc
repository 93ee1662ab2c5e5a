// The epilogue of a dense layer on the CPU, after a plain MatMul.
//
//   TFModels>DenseEpilogue(x, bias, residual[N]; activation, T) -> y
//       x [..., n] (the product), T float32 or bfloat16; bias [n]; residual: none (N = 0) or one tensor shaped
//       like x; y = activation(x + bias) (+ residual), in float32 (dense_epilogue_kernels.h), bfloat16 rounded
//       once. activation: "linear" or "gelu" (exact, erf form).
//
// Why, in bfloat16: in its matmul form (TFMODELS_BF16_PRODUCT=matmul) core.layers.apply_dense runs a bfloat16
// projection as a MatMul alone plus this op. TF's remapper fuses MatMul + BiasAdd (+ GELU) (+ Add) into oneDNN's
// inner-product primitive, which TF feeds plain weights, and that runs oneDNN's gemm kernels (`x64:gemm:jit`); a
// MatMul alone runs oneDNN's matmul primitive (`brg_matmul`), the brgemm kernels PyTorch's linear runs, with AMX
// where the CPU has it. After it TF would take a pass over the product per op, and its bfloat16 GELU is a scalar
// erfc per element: this op is one pass.
// Why, in float32: core.layers.apply_dense_exact_gelu runs a projection with exact GELU whose bits must not depend
// on the call style (XLNet) as a MatMul and this op, one pass where TF's own GELU takes four; oneDNN's fused GELU,
// one pass too, runs only in graphs and rounds otherwise than TF's eager Gelu.
// There is no gradient op: tfmodels.ops.dense_epilogue recomputes the backward pass with its twin.
#include <cstdint>

#include "absl/strings/str_cat.h"
#include "common/tf_checks.h"
#include "common/tf_parallel.h"
#include "dense_epilogue/dense_epilogue_kernels.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace tfmodels {
namespace dense_epilogue {

using ::tensorflow::OpKernel;
using ::tensorflow::OpKernelConstruction;
using ::tensorflow::OpKernelContext;
using ::tensorflow::Tensor;

// The kernels' element type for a TF type: float32 as is, bfloat16 as its bits.
template <typename T>
struct Storage {
  using Type = float;
};
template <>
struct Storage<tensorflow::bfloat16> {
  using Type = uint16_t;
};

template <typename T>
class DenseEpilogueOp : public OpKernel {
  using S = typename Storage<T>::Type;

 public:
  explicit DenseEpilogueOp(OpKernelConstruction* context) : OpKernel(context) {
    std::string activation;
    OP_REQUIRES_OK(context, context->GetAttr("activation", &activation));
    gelu_ = activation == "gelu";
  }

  void Compute(OpKernelContext* context) override {
    const Tensor& x = context->input(0);
    const Tensor& bias = context->input(1);
    if (!CheckThat(context, x.dims() >= 1,
                   absl::StrCat("x must have rank >= 1, got shape ", x.shape().DebugString())) ||
        !CheckRank(context, bias, 1, "bias")) {
      return;
    }
    const int64_t n = x.dim_size(x.dims() - 1);
    if (!CheckDim(context, bias, 0, n, "bias", "the size of x's last axis")) return;
    const S* residual = nullptr;
    if (context->num_inputs() > 2) {
      const Tensor& add = context->input(2);
      if (!CheckThat(context, context->num_inputs() == 3 && add.shape() == x.shape(),
                     absl::StrCat("residual must be one tensor shaped like x ", x.shape().DebugString(), ", got ",
                                  context->num_inputs() - 2, " of shape ", add.shape().DebugString()))) {
        return;
      }
      residual = reinterpret_cast<const S*>(add.flat<T>().data());
    }
    Tensor* output = nullptr;
    OP_REQUIRES_OK(context, context->allocate_output(0, x.shape(), &output));
    if (x.NumElements() == 0) return;
    const int64_t rows = x.NumElements() / n;
    const auto* in = reinterpret_cast<const S*>(x.flat<T>().data());
    const auto* b = reinterpret_cast<const S*>(bias.flat<T>().data());
    auto* out = reinterpret_cast<S*>(output->flat<T>().data());
    TfParallelFor parallel_for(context);
    parallel_for(rows, n * (gelu_ ? 40 : 4), [&](int64_t begin, int64_t end) {
      if (gelu_) {
        EpilogueRows<Activation::kGelu>(in, b, residual, n, begin, end, out);
      } else {
        EpilogueRows<Activation::kLinear>(in, b, residual, n, begin, end, out);
      }
    });
  }

 private:
  bool gelu_;
};

REGISTER_OP("TFModels>DenseEpilogue")
    .Input("x: T")
    .Input("bias: T")
    .Input("residual: N * T")
    .Output("y: T")
    .Attr("activation: {'linear', 'gelu'}")
    .Attr("T: {float, bfloat16}")
    .Attr("N: int >= 0 = 0")
    .SetShapeFn([](::tensorflow::shape_inference::InferenceContext* c) {
      ::tensorflow::shape_inference::ShapeHandle x;
      TF_RETURN_IF_ERROR(c->WithRankAtLeast(c->input(0), 1, &x));
      for (int i = 2; i < c->num_inputs(); ++i) TF_RETURN_IF_ERROR(c->Merge(x, c->input(i), &x));
      c->set_output(0, x);
      return absl::OkStatus();
    });

REGISTER_KERNEL_BUILDER(Name("TFModels>DenseEpilogue").Device(::tensorflow::DEVICE_CPU).TypeConstraint<float>("T"),
                        DenseEpilogueOp<float>);
REGISTER_KERNEL_BUILDER(
    Name("TFModels>DenseEpilogue").Device(::tensorflow::DEVICE_CPU).TypeConstraint<::tensorflow::bfloat16>("T"),
    DenseEpilogueOp<::tensorflow::bfloat16>);

}  // namespace dense_epilogue
}  // namespace tfmodels
