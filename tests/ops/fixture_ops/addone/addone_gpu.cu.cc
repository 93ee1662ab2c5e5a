// GPU kernel of the test-only add-one op: a real __global__ kernel next to TF's headers, so that the loader's
// nvcc command is tested on what every op family's *.cu.cc contains (built only when CUDA is wanted).
#if GOOGLE_CUDA
#define EIGEN_USE_GPU

#include "tensorflow/core/framework/op_kernel.h"
#include "unsupported/Eigen/CXX11/Tensor"

using namespace tensorflow;  // NOLINT

namespace {

__global__ void AddOneKernel(const float* in, float* out, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(blockDim.x) * gridDim.x)
    out[i] = in[i] + 1.0f;
}

class AddOneGpuOp : public OpKernel {
 public:
  explicit AddOneGpuOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}
  void Compute(OpKernelContext* ctx) override {
    const Tensor& x = ctx->input(0);
    Tensor* y = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, x.shape(), &y));
    const int64_t n = x.NumElements();
    if (n == 0) return;
    AddOneKernel<<<static_cast<unsigned>((n + 255) / 256 < 4096 ? (n + 255) / 256 : 4096), 256, 0,
                   ctx->eigen_device<Eigen::GpuDevice>().stream()>>>(x.flat<float>().data(),
                                                                    y->flat<float>().data(), n);
  }
};

}  // namespace

REGISTER_KERNEL_BUILDER(Name("TFModelsTestAddOne").Device(DEVICE_GPU), AddOneGpuOp);

#endif  // GOOGLE_CUDA
