// A test-only op that exercises the loader: out = x + 1.
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "common/tf_parallel.h"

using namespace tensorflow;  // NOLINT

REGISTER_OP("TFModelsTestAddOne")
    .Input("x: float")
    .Output("y: float")
    .SetShapeFn([](shape_inference::InferenceContext* c) { c->set_output(0, c->input(0)); return absl::OkStatus(); });

class AddOneOp : public OpKernel {
 public:
  explicit AddOneOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}
  void Compute(OpKernelContext* ctx) override {
    const Tensor& x = ctx->input(0);
    Tensor* y = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, x.shape(), &y));
    auto in = x.flat<float>();
    auto out = y->flat<float>();
    tfmodels::TfParallelFor parallel_for(ctx);
    parallel_for(in.size(), 10, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) out(i) = in(i) + 1.0f;
    });
  }
};
REGISTER_KERNEL_BUILDER(Name("TFModelsTestAddOne").Device(DEVICE_CPU), AddOneOp);
