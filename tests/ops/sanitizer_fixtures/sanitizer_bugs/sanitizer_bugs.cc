// Test-only ops with deliberate bugs, to prove that the sanitizer build and the fuzz harness report them
// (tests/ops/test_sanitizers.py): each runs fine unsanitized, and must abort with a report when sanitized.
//   TFModelsTestOverread(x) -> y: y[i] = x[i + 1], reading one element past x's end (AddressSanitizer).
//   TFModelsTestOverflow(x) -> y: y[i] = x[i] + INT32_MAX, a signed overflow for x[i] > 0 (UBSan).
#include <cstdint>
#include <limits>

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/common_shape_fns.h"
#include "tensorflow/core/framework/shape_inference.h"

using namespace tensorflow;  // NOLINT

REGISTER_OP("TFModelsTestOverread").Input("x: float").Output("y: float").SetShapeFn(shape_inference::UnchangedShape);
REGISTER_OP("TFModelsTestOverflow").Input("x: int32").Output("y: int32").SetShapeFn(shape_inference::UnchangedShape);

class OverreadOp : public OpKernel {
 public:
  explicit OverreadOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}
  void Compute(OpKernelContext* ctx) override {
    const Tensor& x = ctx->input(0);
    Tensor* y = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, x.shape(), &y));
    const float* in = x.flat<float>().data();
    float* out = y->flat<float>().data();
    for (int64_t i = 0; i < x.NumElements(); ++i) out[i] = in[i + 1];  // the bug: i + 1 == size at the end
  }
};

class OverflowOp : public OpKernel {
 public:
  explicit OverflowOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}
  void Compute(OpKernelContext* ctx) override {
    const Tensor& x = ctx->input(0);
    Tensor* y = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, x.shape(), &y));
    auto in = x.flat<int32_t>();
    auto out = y->flat<int32_t>();
    for (int64_t i = 0; i < x.NumElements(); ++i) out(i) = in(i) + std::numeric_limits<int32_t>::max();  // the bug
  }
};

REGISTER_KERNEL_BUILDER(Name("TFModelsTestOverread").Device(DEVICE_CPU), OverreadOp);
REGISTER_KERNEL_BUILDER(Name("TFModelsTestOverflow").Device(DEVICE_CPU), OverflowOp);
