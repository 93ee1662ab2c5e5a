// The GPU functor of the LSH ops (the OpKernels, with their input validation, are in lsh_ops.cc): the CUDA
// kernels of lsh_kernels.cuh (TF-free) on TF's stream, with their scratch memory from TF's allocator.
#if GOOGLE_CUDA
#define EIGEN_USE_GPU

#include <cstdint>

#include "common/tf_checks.h"
#include "common/tf_gpu.h"
#include "lsh/lsh_kernels.cuh"
#include "lsh/lsh_ops.h"
#include "tensorflow/core/framework/op_kernel.h"

namespace tfmodels {
namespace lsh {

using ::tensorflow::OpKernelContext;
using ::tensorflow::Tensor;
using ::tensorflow::TensorShape;

bool LshFunctor<GpuDevice>::FastHash(OpKernelContext* ctx, const FastHashArgs& args) {
  return CheckLaunch(ctx, FastHashGpu(StreamOf(ctx), args), "fast_hash kernel");
}

bool LshFunctor<GpuDevice>::Cumulation(OpKernelContext* ctx, const CumulationArgs& args) {
  const int64_t chunk = CumulationHashChunk(args);
  Tensor scratch;
  return CheckOk(ctx, ctx->allocate_temp(tensorflow::DT_FLOAT, TensorShape({CumulationScratchBytes(args, chunk) / 4}),
                                         &scratch)) &&
         CheckLaunch(ctx, LshCumulationGpu(StreamOf(ctx), args, scratch.flat<float>().data(), chunk),
                     "lsh_cumulation kernels");
}

bool LshFunctor<GpuDevice>::WeightedCumulation(OpKernelContext* ctx, const CumulationArgs& args) {
  Tensor scratch;
  return CheckOk(ctx, ctx->allocate_temp(tensorflow::DT_INT32, TensorShape({WeightedScratchInts(args)}), &scratch)) &&
         CheckLaunch(ctx, LshWeightedCumulationGpu(StreamOf(ctx), args, scratch.flat<int32_t>().data()),
                     "lsh_weighted_cumulation kernels");
}

}  // namespace lsh
}  // namespace tfmodels

#endif  // GOOGLE_CUDA
