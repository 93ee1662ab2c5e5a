// TensorFlow ops for the block-sparse attention primitives of MRA (semantics: block_sparse_kernels.h).
//
//   TFModels>BlockSparseSddmm   (a [B, R*32, D], b [B, C*32, D], indices [B, K])        -> blocks [B, K, 32, 32]
//   TFModels>BlockSparseSpmm    (blocks, indices, dense [B, N*32, D], num_out_blocks)   -> out [B, M*32, D]
//        transpose_blocks=false: M = R = num_out_blocks rows, N = C columns
//        transpose_blocks=true:  M = C = num_out_blocks columns, N = R rows
//   TFModels>BlockSparseRowMax  (blocks, indices, num_row_blocks, num_col_blocks)       -> [B, R*32]
//   TFModels>BlockSparseRowSum  (blocks, indices, num_row_blocks, num_col_blocks)       -> [B, R*32]
//
// Gradients are registered in Python (tfmodels/ops/block_sparse.py) in terms of these ops. Bad inputs raise
// InvalidArgument naming the input; nothing here can crash on user data.
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/tf_checks.h"
#include "common/tf_parallel.h"
#include "block_sparse/block_sparse_kernels.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace tfmodels {
namespace block_sparse {

using ::tensorflow::OpKernel;
using ::tensorflow::OpKernelConstruction;
using ::tensorflow::OpKernelContext;
using ::tensorflow::Tensor;
using ::tensorflow::TensorShape;
using ::tensorflow::shape_inference::DimensionHandle;
using ::tensorflow::shape_inference::InferenceContext;
using ::tensorflow::shape_inference::ShapeHandle;

namespace {

absl::Status BlocksShape(InferenceContext* c, int input, ShapeHandle* blocks) {
  TF_RETURN_IF_ERROR(c->WithRank(c->input(input), 4, blocks));
  DimensionHandle unused;
  TF_RETURN_IF_ERROR(c->WithValue(c->Dim(*blocks, 2), kBlock, &unused));
  TF_RETURN_IF_ERROR(c->WithValue(c->Dim(*blocks, 3), kBlock, &unused));
  return absl::OkStatus();
}

absl::Status SddmmShape(InferenceContext* c) {
  ShapeHandle a, b, indices;
  TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 3, &a));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 3, &b));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(2), 2, &indices));
  DimensionHandle batch, dim;
  TF_RETURN_IF_ERROR(c->Merge(c->Dim(a, 0), c->Dim(b, 0), &batch));
  TF_RETURN_IF_ERROR(c->Merge(batch, c->Dim(indices, 0), &batch));
  TF_RETURN_IF_ERROR(c->Merge(c->Dim(a, 2), c->Dim(b, 2), &dim));
  c->set_output(0, c->MakeShape({batch, c->Dim(indices, 1), kBlock, kBlock}));
  return absl::OkStatus();
}

absl::Status SpmmShape(InferenceContext* c) {
  ShapeHandle blocks, indices, dense;
  TF_RETURN_IF_ERROR(BlocksShape(c, 0, &blocks));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 2, &indices));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(2), 3, &dense));
  ShapeHandle scalar;
  TF_RETURN_IF_ERROR(c->WithRank(c->input(3), 0, &scalar));
  DimensionHandle batch, out_blocks, out_len;
  TF_RETURN_IF_ERROR(c->Merge(c->Dim(blocks, 0), c->Dim(indices, 0), &batch));
  TF_RETURN_IF_ERROR(c->Merge(batch, c->Dim(dense, 0), &batch));
  TF_RETURN_IF_ERROR(c->MakeDimForScalarInput(3, &out_blocks));
  TF_RETURN_IF_ERROR(c->Multiply(out_blocks, kBlock, &out_len));
  c->set_output(0, c->MakeShape({batch, out_len, c->Dim(dense, 2)}));
  return absl::OkStatus();
}

absl::Status RowReduceShape(InferenceContext* c) {
  ShapeHandle blocks, indices, scalar;
  TF_RETURN_IF_ERROR(BlocksShape(c, 0, &blocks));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 2, &indices));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(2), 0, &scalar));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(3), 0, &scalar));
  DimensionHandle batch, rows, len;
  TF_RETURN_IF_ERROR(c->Merge(c->Dim(blocks, 0), c->Dim(indices, 0), &batch));
  TF_RETURN_IF_ERROR(c->MakeDimForScalarInput(2, &rows));
  TF_RETURN_IF_ERROR(c->Multiply(rows, kBlock, &len));
  c->set_output(0, c->MakeShape({batch, len}));
  return absl::OkStatus();
}

}  // namespace

REGISTER_OP("TFModels>BlockSparseSddmm")
    .Input("a: T")
    .Input("b: T")
    .Input("indices: int32")
    .Output("blocks: T")
    .Attr("T: {float, double}")
    .SetShapeFn(SddmmShape)
    .Doc("blocks[b,s,i,j] = sum_d a[b, r*32+i, d] * b[b, c*32+j, d] for indices[b,s] = r*C + c (C = len(b)/32); "
         "0 for negative (unused) slots.");

REGISTER_OP("TFModels>BlockSparseSpmm")
    .Input("blocks: T")
    .Input("indices: int32")
    .Input("dense: T")
    .Input("num_out_blocks: int32")
    .Output("out: T")
    .Attr("T: {float, double}")
    .Attr("transpose_blocks: bool = false")
    .SetShapeFn(SpmmShape)
    .Doc("Selected blocks times a dense matrix, accumulated per output block (see block_sparse_kernels.h).");

REGISTER_OP("TFModels>BlockSparseRowMax")
    .Input("blocks: T")
    .Input("indices: int32")
    .Input("num_row_blocks: int32")
    .Input("num_col_blocks: int32")
    .Output("out: T")
    .Attr("T: {float, double}")
    .SetShapeFn(RowReduceShape)
    .Doc("Row-wise max over the selected blocks of each row block; -inf where a row block has none.");

REGISTER_OP("TFModels>BlockSparseRowSum")
    .Input("blocks: T")
    .Input("indices: int32")
    .Input("num_row_blocks: int32")
    .Input("num_col_blocks: int32")
    .Output("out: T")
    .Attr("T: {float, double}")
    .SetShapeFn(RowReduceShape)
    .Doc("Row-wise sum over the selected blocks of each row block; 0 where a row block has none.");

// ---------------------------------------------------------------------------------------------------------
// Validation shared by the CPU and GPU kernels (GPU kernels copy nothing back: indices are checked on the host
// where they live in host memory, i.e. on CPU; on GPU their range is checked by the Python wrapper).

bool CheckScalarBlocks(OpKernelContext* ctx, int input, const char* name, int64_t* value) {
  const Tensor& t = ctx->input(input);
  if (!CheckThat(ctx, t.dims() == 0, absl::StrCat(name, " must be a scalar, got shape ", t.shape().DebugString())))
    return false;
  *value = t.scalar<int32_t>()();
  return CheckThat(ctx, *value >= 0, absl::StrCat(name, " must be >= 0, got ", *value));
}

bool CheckBlocks(OpKernelContext* ctx, const Tensor& blocks, const Tensor& indices) {
  if (!CheckRank(ctx, blocks, 4, "blocks") || !CheckRank(ctx, indices, 2, "indices")) return false;
  if (!CheckDim(ctx, blocks, 2, kBlock, "blocks", "the block size") ||
      !CheckDim(ctx, blocks, 3, kBlock, "blocks", "the block size"))
    return false;
  return CheckThat(ctx, blocks.dim_size(0) == indices.dim_size(0) && blocks.dim_size(1) == indices.dim_size(1),
                   absl::StrCat("blocks ", blocks.shape().DebugString(), " and indices ",
                                indices.shape().DebugString(), " must agree on [batch, num_slots]"));
}

bool CheckDense(OpKernelContext* ctx, const Tensor& t, const char* name, int64_t batch) {
  if (!CheckRank(ctx, t, 3, name)) return false;
  if (!CheckThat(ctx, t.dim_size(1) % kBlock == 0,
                 absl::StrCat(name, " length (dimension 1) must be a multiple of the block size ", kBlock,
                              ", got shape ", t.shape().DebugString())))
    return false;
  return CheckDim(ctx, t, 0, batch, name, "the batch size");
}

template <typename Device>
bool CheckIndexRange(OpKernelContext* ctx, const Tensor& indices, int64_t rows, int64_t cols) {
  const std::string message = CheckIndices(indices.flat<int32_t>().data(), indices.NumElements(), rows, cols);
  return CheckThat(ctx, message.empty(), message);
}

// ---------------------------------------------------------------------------------------------------------
// CPU kernels

template <typename T>
class SddmmCpuOp : public OpKernel {
 public:
  explicit SddmmCpuOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}
  void Compute(OpKernelContext* ctx) override {
    const Tensor& a = ctx->input(0);
    const Tensor& b = ctx->input(1);
    const Tensor& indices = ctx->input(2);
    if (!CheckRank(ctx, indices, 2, "indices")) return;
    const int64_t batch = indices.dim_size(0), slots = indices.dim_size(1);
    if (!CheckDense(ctx, a, "a", batch) || !CheckDense(ctx, b, "b", batch)) return;
    if (!CheckDim(ctx, b, 2, a.dim_size(2), "b", "the feature size of a")) return;
    const int64_t rows = a.dim_size(1) / kBlock, cols = b.dim_size(1) / kBlock;
    if (!CheckIndexRange<void>(ctx, indices, rows, cols)) return;
    Tensor* out = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({batch, slots, kBlock, kBlock}), &out));
    Tensor scratch;  // b's tiles transposed, from TF's allocator (reused across calls, unlike a fresh malloc)
    OP_REQUIRES_OK(ctx, ctx->allocate_temp(::tensorflow::DataTypeToEnum<T>::value, b.shape(), &scratch));
    TfParallelFor pf(ctx);
    Sddmm<T>(pf, a.flat<T>().data(), b.flat<T>().data(), indices.flat<int32_t>().data(), out->flat<T>().data(),
             batch, rows, cols, a.dim_size(2), slots, scratch.flat<T>().data());
  }
};

template <typename T>
class SpmmCpuOp : public OpKernel {
 public:
  explicit SpmmCpuOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("transpose_blocks", &transpose_));
  }
  void Compute(OpKernelContext* ctx) override {
    const Tensor& blocks = ctx->input(0);
    const Tensor& indices = ctx->input(1);
    const Tensor& dense = ctx->input(2);
    if (!CheckBlocks(ctx, blocks, indices)) return;
    const int64_t batch = indices.dim_size(0), slots = indices.dim_size(1);
    if (!CheckDense(ctx, dense, "dense", batch)) return;
    int64_t out_blocks = 0;
    if (!CheckScalarBlocks(ctx, 3, "num_out_blocks", &out_blocks)) return;
    const int64_t dense_blocks = dense.dim_size(1) / kBlock;
    const int64_t rows = transpose_ ? dense_blocks : out_blocks;
    const int64_t cols = transpose_ ? out_blocks : dense_blocks;
    if (!CheckIndexRange<void>(ctx, indices, rows, cols)) return;
    const int64_t dim = dense.dim_size(2);
    Tensor* out = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({batch, out_blocks * kBlock, dim}), &out));
    TfParallelFor pf(ctx);
    Spmm<T>(pf, blocks.flat<T>().data(), indices.flat<int32_t>().data(), dense.flat<T>().data(),
            out->flat<T>().data(), batch, rows, cols, dim, slots, transpose_);
  }

 private:
  bool transpose_ = false;
};

template <typename T, bool kMax>
class RowReduceCpuOp : public OpKernel {
 public:
  explicit RowReduceCpuOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}
  void Compute(OpKernelContext* ctx) override {
    const Tensor& blocks = ctx->input(0);
    const Tensor& indices = ctx->input(1);
    if (!CheckBlocks(ctx, blocks, indices)) return;
    int64_t rows = 0, cols = 0;
    if (!CheckScalarBlocks(ctx, 2, "num_row_blocks", &rows) || !CheckScalarBlocks(ctx, 3, "num_col_blocks", &cols))
      return;
    if (!CheckIndexRange<void>(ctx, indices, rows, cols)) return;
    const int64_t batch = indices.dim_size(0), slots = indices.dim_size(1);
    Tensor* out = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({batch, rows * kBlock}), &out));
    TfParallelFor pf(ctx);
    RowReduce<T>(pf, blocks.flat<T>().data(), indices.flat<int32_t>().data(), out->flat<T>().data(), batch, rows,
                 cols, slots, kMax);
  }
};

#define TFMODELS_REGISTER_CPU(T)                                                                              \
  REGISTER_KERNEL_BUILDER(                                                                                    \
      Name("TFModels>BlockSparseSddmm").Device(::tensorflow::DEVICE_CPU).TypeConstraint<T>("T"),             \
      SddmmCpuOp<T>);                                                                                         \
  REGISTER_KERNEL_BUILDER(                                                                                    \
      Name("TFModels>BlockSparseSpmm").Device(::tensorflow::DEVICE_CPU).TypeConstraint<T>("T"), SpmmCpuOp<T>); \
  REGISTER_KERNEL_BUILDER(                                                                                    \
      Name("TFModels>BlockSparseRowMax").Device(::tensorflow::DEVICE_CPU).TypeConstraint<T>("T"),             \
      RowReduceCpuOp<T, true>);                                                                               \
  REGISTER_KERNEL_BUILDER(                                                                                    \
      Name("TFModels>BlockSparseRowSum").Device(::tensorflow::DEVICE_CPU).TypeConstraint<T>("T"),             \
      RowReduceCpuOp<T, false>);

TFMODELS_REGISTER_CPU(float)
TFMODELS_REGISTER_CPU(double)
#undef TFMODELS_REGISTER_CPU

}  // namespace block_sparse
}  // namespace tfmodels
