// GPU OpKernels of the LSH ops (registered in lsh_ops.cc). Built by the loader with nvcc when CUDA is wanted.
// Shapes are validated on the host exactly as on the CPU; the kernels are in lsh_kernels.cuh (TF-free).
#if GOOGLE_CUDA
#define EIGEN_USE_GPU

#include <cstdint>

#include "absl/strings/str_cat.h"
#include "common/tf_checks.h"
#include "lsh/lsh_kernels.cuh"
#include "lsh/lsh_op_checks.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "unsupported/Eigen/CXX11/Tensor"

namespace tfmodels {
namespace lsh {

using ::tensorflow::DEVICE_GPU;
using ::tensorflow::OpKernel;
using ::tensorflow::OpKernelConstruction;
using ::tensorflow::OpKernelContext;
using ::tensorflow::Tensor;
using ::tensorflow::TensorShape;

namespace {

cudaStream_t StreamOf(OpKernelContext* ctx) { return ctx->eigen_gpu_device().stream(); }

void CheckLaunch(OpKernelContext* ctx, cudaError_t status, const char* what) {
  if (status != cudaSuccess) {
    ctx->CtxFailure(__FILE__, __LINE__, absl::InternalError(absl::StrCat(what, " failed: ",
                                                                         cudaGetErrorString(status))));
  }
}

}  // namespace

class LshFastHashGpuOp : public OpKernel {
 public:
  explicit LshFastHashGpuOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("num_hash", &num_hash_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("hash_code_len", &code_len_));
  }

  void Compute(OpKernelContext* ctx) override {
    FastHashArgs args;
    if (!CheckFastHashInputs(ctx, num_hash_, code_len_, &args)) return;
    if (!CheckThat(ctx, args.padded_dim <= kMaxGpuPaddedDim,
                   absl::StrCat("on the GPU the padded dimension must be <= ", kMaxGpuPaddedDim, ", got ",
                                args.padded_dim)) ||
        !CheckThat(ctx, args.batch * args.num_vectors * args.num_part < kMaxInt32Elements,
                   "fast_hash: too many vectors for one launch")) {
      return;
    }
    Tensor* codes = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({args.batch, args.num_vectors, args.num_hash}), &codes));
    args.vectors = ctx->input(0).flat<float>().data();
    args.mask = ctx->input(1).flat<int32_t>().data();
    args.projections = ctx->input(2).flat<float>().data();
    args.codes = codes->flat<int32_t>().data();
    CheckLaunch(ctx, FastHashGpu(StreamOf(ctx), args), "fast_hash kernel");
  }

 private:
  int64_t num_hash_ = 0, code_len_ = 0;
};

template <bool kWeighted>
class LshCumulationGpuOp : public OpKernel {
 public:
  explicit LshCumulationGpuOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("hashtable_capacity", &capacity_));
  }

  void Compute(OpKernelContext* ctx) override {
    CumulationArgs args;
    if (!CheckCumulationInputs(ctx, kWeighted, capacity_, &args)) return;
    const int i_kmask = kWeighted ? 3 : 2, i_kcode = kWeighted ? 4 : 3, i_value = kWeighted ? 6 : 4;
    Tensor* out = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({args.batch, args.num_query, args.value_dim}), &out));
    args.query_mask = ctx->input(0).flat<int32_t>().data();
    args.query_code = ctx->input(1).flat<int32_t>().data();
    args.key_mask = ctx->input(i_kmask).flat<int32_t>().data();
    args.key_code = ctx->input(i_kcode).flat<int32_t>().data();
    args.value = ctx->input(i_value).flat<float>().data();
    args.out = out->flat<float>().data();
    Tensor scratch;
    if (kWeighted) {
      args.query_weight = ctx->input(2).flat<float>().data();
      args.key_weight = ctx->input(5).flat<float>().data();
      OP_REQUIRES_OK(ctx, ctx->allocate_temp(tensorflow::DT_INT32, TensorShape({WeightedScratchInts(args)}),
                                             &scratch));
      CheckLaunch(ctx, LshWeightedCumulationGpu(StreamOf(ctx), args, scratch.flat<int32_t>().data()),
                  "lsh_weighted_cumulation kernels");
    } else {
      const int64_t chunk = CumulationHashChunk(args);
      OP_REQUIRES_OK(ctx, ctx->allocate_temp(tensorflow::DT_FLOAT,
                                             TensorShape({CumulationScratchBytes(args, chunk) / 4}), &scratch));
      CheckLaunch(ctx, LshCumulationGpu(StreamOf(ctx), args, scratch.flat<float>().data(), chunk),
                  "lsh_cumulation kernels");
    }
  }

 private:
  int64_t capacity_ = 0;
};

REGISTER_KERNEL_BUILDER(Name("TFModels>LshFastHash").Device(DEVICE_GPU), LshFastHashGpuOp);
REGISTER_KERNEL_BUILDER(Name("TFModels>LshCumulation").Device(DEVICE_GPU), LshCumulationGpuOp<false>);
REGISTER_KERNEL_BUILDER(Name("TFModels>LshWeightedCumulation").Device(DEVICE_GPU), LshCumulationGpuOp<true>);

}  // namespace lsh
}  // namespace tfmodels

#endif  // GOOGLE_CUDA
