// GPU kernels of the TFModels>BlockSparse* ops (registered in block_sparse_ops.cc); CUDA code in
// block_sparse_kernels.cuh. Scalars (block counts) live in host memory. Index ranges are checked by the Python
// wrapper on GPU (tfmodels/ops/block_sparse.py); the CUDA kernels never read outside their operands even then,
// since every index is decoded against the grid before use... see the shape checks below.
#if GOOGLE_CUDA
#define EIGEN_USE_GPU

#include "absl/strings/str_cat.h"
#include "block_sparse/block_sparse_kernels.cuh"
#include "common/tf_checks.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/tensor.h"
#include "unsupported/Eigen/CXX11/Tensor"

namespace tfmodels {
namespace block_sparse {

using ::tensorflow::OpKernel;
using ::tensorflow::OpKernelConstruction;
using ::tensorflow::OpKernelContext;
using ::tensorflow::Tensor;
using ::tensorflow::TensorShape;

namespace {

cudaStream_t StreamOf(OpKernelContext* ctx) { return ctx->eigen_device<Eigen::GpuDevice>().stream(); }

bool LaunchOk(OpKernelContext* ctx, cudaError_t status, const char* what) {
  return CheckThat(ctx, status == cudaSuccess,
                   absl::StrCat(what, " CUDA launch failed: ", cudaGetErrorString(status)));
}

bool ReadScalar(OpKernelContext* ctx, int input, const char* name, int64_t* value) {
  const Tensor& t = ctx->input(input);
  if (!CheckThat(ctx, t.dims() == 0, absl::StrCat(name, " must be a scalar, got shape ", t.shape().DebugString())))
    return false;
  *value = t.scalar<int32_t>()();
  return CheckThat(ctx, *value >= 0, absl::StrCat(name, " must be >= 0, got ", *value));
}

bool CheckDenseGpu(OpKernelContext* ctx, const Tensor& t, const char* name, int64_t batch) {
  if (!CheckRank(ctx, t, 3, name)) return false;
  if (!CheckThat(ctx, t.dim_size(1) % kBlock == 0,
                 absl::StrCat(name, " length (dimension 1) must be a multiple of the block size ", kBlock,
                              ", got shape ", t.shape().DebugString())))
    return false;
  return CheckDim(ctx, t, 0, batch, name, "the batch size");
}

bool CheckBlocksGpu(OpKernelContext* ctx, const Tensor& blocks, const Tensor& indices) {
  if (!CheckRank(ctx, blocks, 4, "blocks") || !CheckRank(ctx, indices, 2, "indices")) return false;
  if (!CheckDim(ctx, blocks, 2, kBlock, "blocks", "the block size") ||
      !CheckDim(ctx, blocks, 3, kBlock, "blocks", "the block size"))
    return false;
  return CheckThat(ctx, blocks.dim_size(0) == indices.dim_size(0) && blocks.dim_size(1) == indices.dim_size(1),
                   absl::StrCat("blocks ", blocks.shape().DebugString(), " and indices ",
                                indices.shape().DebugString(), " must agree on [batch, num_slots]"));
}

}  // namespace

template <typename T>
class SddmmGpuOp : public OpKernel {
 public:
  explicit SddmmGpuOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}
  void Compute(OpKernelContext* ctx) override {
    const Tensor& a = ctx->input(0);
    const Tensor& b = ctx->input(1);
    const Tensor& indices = ctx->input(2);
    if (!CheckRank(ctx, indices, 2, "indices")) return;
    const int64_t batch = indices.dim_size(0), slots = indices.dim_size(1);
    if (!CheckDenseGpu(ctx, a, "a", batch) || !CheckDenseGpu(ctx, b, "b", batch)) return;
    if (!CheckDim(ctx, b, 2, a.dim_size(2), "b", "the feature size of a")) return;
    Tensor* out = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({batch, slots, kBlock, kBlock}), &out));
    LaunchOk(ctx,
             cuda::LaunchSddmm<T>(StreamOf(ctx), a.flat<T>().data(), b.flat<T>().data(),
                                  indices.flat<int32_t>().data(), out->flat<T>().data(), batch,
                                  a.dim_size(1) / kBlock, b.dim_size(1) / kBlock, a.dim_size(2), slots),
             "BlockSparseSddmm");
  }
};

template <typename T>
class SpmmGpuOp : public OpKernel {
 public:
  explicit SpmmGpuOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("transpose_blocks", &transpose_));
  }
  void Compute(OpKernelContext* ctx) override {
    const Tensor& blocks = ctx->input(0);
    const Tensor& indices = ctx->input(1);
    const Tensor& dense = ctx->input(2);
    if (!CheckBlocksGpu(ctx, blocks, indices)) return;
    const int64_t batch = indices.dim_size(0), slots = indices.dim_size(1);
    if (!CheckDenseGpu(ctx, dense, "dense", batch)) return;
    int64_t out_blocks = 0;
    if (!ReadScalar(ctx, 3, "num_out_blocks", &out_blocks)) return;
    const int64_t dense_blocks = dense.dim_size(1) / kBlock;
    const int64_t dim = dense.dim_size(2);
    Tensor* out = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({batch, out_blocks * kBlock, dim}), &out));
    LaunchOk(ctx,
             cuda::LaunchSpmm<T>(StreamOf(ctx), blocks.flat<T>().data(), indices.flat<int32_t>().data(),
                                 dense.flat<T>().data(), out->flat<T>().data(), batch,
                                 transpose_ ? dense_blocks : out_blocks, transpose_ ? out_blocks : dense_blocks, dim,
                                 slots, transpose_),
             "BlockSparseSpmm");
  }

 private:
  bool transpose_ = false;
};

template <typename T, bool kMax>
class RowReduceGpuOp : public OpKernel {
 public:
  explicit RowReduceGpuOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}
  void Compute(OpKernelContext* ctx) override {
    const Tensor& blocks = ctx->input(0);
    const Tensor& indices = ctx->input(1);
    if (!CheckBlocksGpu(ctx, blocks, indices)) return;
    int64_t rows = 0, cols = 0;
    if (!ReadScalar(ctx, 2, "num_row_blocks", &rows) || !ReadScalar(ctx, 3, "num_col_blocks", &cols)) return;
    const int64_t batch = indices.dim_size(0), slots = indices.dim_size(1);
    Tensor* out = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({batch, rows * kBlock}), &out));
    LaunchOk(ctx,
             cuda::LaunchRowReduce<T>(StreamOf(ctx), blocks.flat<T>().data(), indices.flat<int32_t>().data(),
                                      out->flat<T>().data(), batch, rows, cols, slots, kMax),
             kMax ? "BlockSparseRowMax" : "BlockSparseRowSum");
  }
};

#define TFMODELS_REGISTER_GPU(T)                                                                           \
  REGISTER_KERNEL_BUILDER(                                                                                 \
      Name("TFModels>BlockSparseSddmm").Device(::tensorflow::DEVICE_GPU).TypeConstraint<T>("T"),          \
      SddmmGpuOp<T>);                                                                                      \
  REGISTER_KERNEL_BUILDER(Name("TFModels>BlockSparseSpmm")                                                 \
                              .Device(::tensorflow::DEVICE_GPU)                                            \
                              .TypeConstraint<T>("T")                                                      \
                              .HostMemory("num_out_blocks"),                                               \
                          SpmmGpuOp<T>);                                                                   \
  REGISTER_KERNEL_BUILDER(Name("TFModels>BlockSparseRowMax")                                               \
                              .Device(::tensorflow::DEVICE_GPU)                                            \
                              .TypeConstraint<T>("T")                                                      \
                              .HostMemory("num_row_blocks")                                                \
                              .HostMemory("num_col_blocks"),                                               \
                          RowReduceGpuOp<T, true>);                                                        \
  REGISTER_KERNEL_BUILDER(Name("TFModels>BlockSparseRowSum")                                               \
                              .Device(::tensorflow::DEVICE_GPU)                                            \
                              .TypeConstraint<T>("T")                                                      \
                              .HostMemory("num_row_blocks")                                                \
                              .HostMemory("num_col_blocks"),                                               \
                          RowReduceGpuOp<T, false>);

TFMODELS_REGISTER_GPU(float)
TFMODELS_REGISTER_GPU(double)
#undef TFMODELS_REGISTER_GPU

}  // namespace block_sparse
}  // namespace tfmodels

#endif  // GOOGLE_CUDA
