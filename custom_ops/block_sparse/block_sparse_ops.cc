// TensorFlow ops for the block-sparse attention primitives of MRA (semantics: block_sparse_kernels.h).
//
//   TFModels>BlockSparseSddmm   (a [B, R*32, D], b [B, C*32, D], indices [B, K])        -> blocks [B, K, 32, 32]
//   TFModels>BlockSparseSpmm    (blocks, indices, dense [B, N*32, D], num_out_blocks)   -> out [B, M*32, D]
//        transpose_blocks=false: M = R = num_out_blocks rows, N = C columns
//        transpose_blocks=true:  M = C = num_out_blocks columns, N = R rows
//   TFModels>BlockSparseRowMax  (blocks, indices, num_row_blocks, num_col_blocks)       -> [B, R*32]
//   TFModels>BlockSparseRowSum  (blocks, indices, num_row_blocks, num_col_blocks)       -> [B, R*32]
//   TFModels>BlockSparseAttention (query [B, R*32, D], key [B, C*32, D], value [B, C*32, E],
//                                  key_mask [B, C*32] or [0] (none), indices)
//                                                              -> out, norm, row_max, weights [B, K, 32, 32]
//   TFModels>BlockSparseAttentionGrad (query, key, value, indices, weights, grad_out, grad_norm)
//                                                              -> d query, d key, d value
//
// Gradients are registered in Python (tfmodels/ops/block_sparse.py) in terms of these ops. Bad inputs raise
// InvalidArgument naming the input; nothing here can crash on user data. Sddmm, Spmm and the row reductions are
// one OpKernel<Device, T> each (validation for both devices) over BlockSparseFunctor: the CPU one here, the GPU
// one in block_sparse_ops_gpu.cu.cc. The fused attention ops run on the CPU only (on a GPU the Python layer
// composes them from the primitives).
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "block_sparse/block_sparse_ops.h"
#include "common/devices.h"
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

absl::Status AttentionShapeFn(InferenceContext* c) {
  ShapeHandle query, key, value, indices;
  TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 3, &query));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 3, &key));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(2), 3, &value));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(4), 2, &indices));
  DimensionHandle batch;
  TF_RETURN_IF_ERROR(c->Merge(c->Dim(query, 0), c->Dim(key, 0), &batch));
  TF_RETURN_IF_ERROR(c->Merge(batch, c->Dim(value, 0), &batch));
  TF_RETURN_IF_ERROR(c->Merge(batch, c->Dim(indices, 0), &batch));
  c->set_output(0, c->MakeShape({batch, c->Dim(query, 1), c->Dim(value, 2)}));
  c->set_output(1, c->MakeShape({batch, c->Dim(query, 1)}));
  c->set_output(2, c->MakeShape({batch, c->Dim(query, 1)}));
  c->set_output(3, c->MakeShape({batch, c->Dim(indices, 1), kBlock, kBlock}));
  return absl::OkStatus();
}

absl::Status AttentionGradShapeFn(InferenceContext* c) {
  for (int i = 0; i < 3; ++i) c->set_output(i, c->input(i));
  return absl::OkStatus();
}

}  // namespace

REGISTER_OP("TFModels>BlockSparseAttention")
    .Input("query: T")
    .Input("key: T")
    .Input("value: T")
    .Input("key_mask: T")
    .Input("indices: int32")
    .Output("out: T")
    .Output("norm: T")
    .Output("row_max: T")
    .Output("weights: T")
    .Attr("T: {float, double}")
    .Attr("scale: float = 1.0")
    .SetShapeFn(AttentionShapeFn)
    .Doc("Fused high-resolution MRA attention over the selected blocks (see block_sparse_kernels.h).");

REGISTER_OP("TFModels>BlockSparseAttentionGrad")
    .Input("query: T")
    .Input("key: T")
    .Input("value: T")
    .Input("indices: int32")
    .Input("weights: T")
    .Input("grad_out: T")
    .Input("grad_norm: T")
    .Output("grad_query: T")
    .Output("grad_key: T")
    .Output("grad_value: T")
    .Attr("T: {float, double}")
    .Attr("scale: float = 1.0")
    .SetShapeFn(AttentionGradShapeFn)
    .Doc("Gradient of TFModels>BlockSparseAttention with respect to query, key and value.");

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
// Validation of both devices. Index ranges are checked where the indices are in host memory, i.e. on the CPU;
// on the GPU the Python wrapper checks them before the launch (the kernels copy nothing back).

bool CheckScalarBlocks(OpKernelContext* ctx, int input, const char* name, int64_t* value) {
  const Tensor& t = ctx->input(input);
  if (!CheckThat(ctx, t.dims() == 0, absl::StrCat(name, " must be a scalar, got shape ", t.shape().DebugString())))
    return false;
  *value = t.scalar<int32_t>()();
  return CheckThat(ctx, *value >= 0, absl::StrCat(name, " must be >= 0, got ", *value));
}

bool CheckBlocks(OpKernelContext* ctx, const Tensor& blocks, const Tensor& indices, const char* name = "blocks") {
  if (!CheckRank(ctx, blocks, 4, name) || !CheckRank(ctx, indices, 2, "indices")) return false;
  if (!CheckDim(ctx, blocks, 2, kBlock, name, "the block size") ||
      !CheckDim(ctx, blocks, 3, kBlock, name, "the block size"))
    return false;
  return CheckThat(ctx, blocks.dim_size(0) == indices.dim_size(0) && blocks.dim_size(1) == indices.dim_size(1),
                   absl::StrCat(name, " ", blocks.shape().DebugString(), " and indices ",
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

bool CheckIndexRange(OpKernelContext* ctx, const Tensor& indices, int64_t rows, int64_t cols) {
  const std::string message = CheckIndices(indices.flat<int32_t>().data(), indices.NumElements(), rows, cols);
  return CheckThat(ctx, message.empty(), message);
}

// ---------------------------------------------------------------------------------------------------------
// The primitives on both devices

template <typename T>
struct BlockSparseFunctor<CpuDevice, T> {
  static bool Sddmm(OpKernelContext* ctx, const T* a, const T* b, const int32_t* indices, T* out, int64_t batch,
                    int64_t rows, int64_t cols, int64_t dim, int64_t slots) {
    Tensor scratch;  // b's tiles transposed, from TF's allocator (reused across calls, unlike a fresh malloc)
    if (!CheckOk(ctx, ctx->allocate_temp(::tensorflow::DataTypeToEnum<T>::value,
                                         TensorShape({batch, cols * kBlock, dim}), &scratch)))
      return false;
    block_sparse::Sddmm<T>(TfParallelFor(ctx), a, b, indices, out, batch, rows, cols, dim, slots,
                           scratch.flat<T>().data());
    return true;
  }
  static bool Spmm(OpKernelContext* ctx, const T* blocks, const int32_t* indices, const T* dense, T* out,
                   int64_t batch, int64_t rows, int64_t cols, int64_t dim, int64_t slots, bool transpose) {
    block_sparse::Spmm<T>(TfParallelFor(ctx), blocks, indices, dense, out, batch, rows, cols, dim, slots, transpose);
    return true;
  }
  static bool RowReduce(OpKernelContext* ctx, const T* blocks, const int32_t* indices, T* out, int64_t batch,
                        int64_t rows, int64_t cols, int64_t slots, bool is_max) {
    block_sparse::RowReduce<T>(TfParallelFor(ctx), blocks, indices, out, batch, rows, cols, slots, is_max);
    return true;
  }
};

template <typename Device, typename T>
class SddmmOp : public OpKernel {
 public:
  explicit SddmmOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}
  void Compute(OpKernelContext* ctx) override {
    const Tensor& a = ctx->input(0);
    const Tensor& b = ctx->input(1);
    const Tensor& indices = ctx->input(2);
    if (!CheckRank(ctx, indices, 2, "indices")) return;
    const int64_t batch = indices.dim_size(0), slots = indices.dim_size(1);
    if (!CheckDense(ctx, a, "a", batch) || !CheckDense(ctx, b, "b", batch)) return;
    if (!CheckDim(ctx, b, 2, a.dim_size(2), "b", "the feature size of a")) return;
    const int64_t rows = a.dim_size(1) / kBlock, cols = b.dim_size(1) / kBlock;
    if (!kOnGpu<Device> && !CheckIndexRange(ctx, indices, rows, cols)) return;
    Tensor* out = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({batch, slots, kBlock, kBlock}), &out));
    BlockSparseFunctor<Device, T>::Sddmm(ctx, a.flat<T>().data(), b.flat<T>().data(), indices.flat<int32_t>().data(),
                                         out->flat<T>().data(), batch, rows, cols, a.dim_size(2), slots);
  }
};

template <typename Device, typename T>
class SpmmOp : public OpKernel {
 public:
  explicit SpmmOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
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
    if (!kOnGpu<Device> && !CheckIndexRange(ctx, indices, rows, cols)) return;
    const int64_t dim = dense.dim_size(2);
    Tensor* out = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({batch, out_blocks * kBlock, dim}), &out));
    BlockSparseFunctor<Device, T>::Spmm(ctx, blocks.flat<T>().data(), indices.flat<int32_t>().data(),
                                        dense.flat<T>().data(), out->flat<T>().data(), batch, rows, cols, dim, slots,
                                        transpose_);
  }

 private:
  bool transpose_ = false;
};

template <typename Device, typename T, bool kMax>
class RowReduceOp : public OpKernel {
 public:
  explicit RowReduceOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}
  void Compute(OpKernelContext* ctx) override {
    const Tensor& blocks = ctx->input(0);
    const Tensor& indices = ctx->input(1);
    if (!CheckBlocks(ctx, blocks, indices)) return;
    int64_t rows = 0, cols = 0;
    if (!CheckScalarBlocks(ctx, 2, "num_row_blocks", &rows) || !CheckScalarBlocks(ctx, 3, "num_col_blocks", &cols))
      return;
    if (!kOnGpu<Device> && !CheckIndexRange(ctx, indices, rows, cols)) return;
    const int64_t batch = indices.dim_size(0), slots = indices.dim_size(1);
    Tensor* out = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({batch, rows * kBlock}), &out));
    BlockSparseFunctor<Device, T>::RowReduce(ctx, blocks.flat<T>().data(), indices.flat<int32_t>().data(),
                                             out->flat<T>().data(), batch, rows, cols, slots, kMax);
  }
};

// ---------------------------------------------------------------------------------------------------------
// The fused attention ops (CPU)

// Checks shared by the fused attention ops (query, key, value at inputs 0-2); fills *shape. mask_input: the
// key_mask's input (may be an empty tensor: no mask), or -1 where the op takes none.
bool CheckAttentionInputs(OpKernelContext* ctx, int mask_input, int indices_input, AttentionShape* shape) {
  const Tensor& query = ctx->input(0);
  const Tensor& key = ctx->input(1);
  const Tensor& value = ctx->input(2);
  const Tensor& indices = ctx->input(indices_input);
  if (!CheckRank(ctx, indices, 2, "indices")) return false;
  const int64_t batch = indices.dim_size(0);
  if (!CheckDense(ctx, query, "query", batch) || !CheckDense(ctx, key, "key", batch) ||
      !CheckDense(ctx, value, "value", batch))
    return false;
  if (!CheckDim(ctx, key, 2, query.dim_size(2), "key", "the feature size of query") ||
      !CheckDim(ctx, value, 1, key.dim_size(1), "value", "the length of key"))
    return false;
  if (mask_input >= 0) {
    const Tensor& key_mask = ctx->input(mask_input);
    if (key_mask.NumElements() != 0 || key_mask.dims() != 1) {
      if (!CheckRank(ctx, key_mask, 2, "key_mask") ||
          !CheckDim(ctx, key_mask, 0, batch, "key_mask", "the batch size") ||
          !CheckDim(ctx, key_mask, 1, key.dim_size(1), "key_mask", "the length of key"))
        return false;
    }
  }
  *shape = AttentionShape{batch, query.dim_size(1) / kBlock, key.dim_size(1) / kBlock, query.dim_size(2),
                          value.dim_size(2), indices.dim_size(1), 1.0};
  return CheckIndexRange(ctx, indices, shape->num_row_blocks, shape->num_col_blocks);
}

template <typename T>
const T* MaskOrNull(const Tensor& key_mask) {
  return key_mask.NumElements() == 0 ? nullptr : key_mask.flat<T>().data();
}

// Inputs: query, key, value, key_mask, indices.
template <typename T>
class AttentionCpuOp : public OpKernel {
 public:
  explicit AttentionCpuOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("scale", &scale_));
  }
  void Compute(OpKernelContext* ctx) override {
    AttentionShape shape;
    if (!CheckAttentionInputs(ctx, 3, 4, &shape)) return;
    shape.scale = scale_;
    const Tensor& query = ctx->input(0);
    Tensor *out = nullptr, *norm = nullptr, *row_max = nullptr, *weights = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({shape.batch, query.dim_size(1), shape.dim_v}), &out));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, TensorShape({shape.batch, query.dim_size(1)}), &norm));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, TensorShape({shape.batch, query.dim_size(1)}), &row_max));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(3, TensorShape({shape.batch, shape.num_slots, kBlock, kBlock}),
                                             &weights));
    TfParallelFor pf(ctx);
    Attention<T>(pf, shape, query.flat<T>().data(), ctx->input(1).flat<T>().data(), ctx->input(2).flat<T>().data(),
                 MaskOrNull<T>(ctx->input(3)), ctx->input(4).flat<int32_t>().data(), out->flat<T>().data(),
                 norm->flat<T>().data(), row_max->flat<T>().data(), weights->flat<T>().data());
  }

 private:
  float scale_ = 1.0f;
};

// Inputs: query, key, value, indices, weights (the forward's), grad_out, grad_norm (may be empty: zero).
template <typename T>
class AttentionGradCpuOp : public OpKernel {
 public:
  explicit AttentionGradCpuOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("scale", &scale_));
  }
  void Compute(OpKernelContext* ctx) override {
    AttentionShape shape;
    if (!CheckAttentionInputs(ctx, -1, 3, &shape)) return;
    shape.scale = scale_;
    const Tensor& query = ctx->input(0);
    const Tensor& indices = ctx->input(3);
    const Tensor& weights = ctx->input(4);
    const Tensor& grad_out = ctx->input(5);
    const Tensor& grad_norm = ctx->input(6);
    const int64_t length = query.dim_size(1);
    if (!CheckBlocks(ctx, weights, indices, "weights") ||
        !CheckThat(ctx, grad_out.dims() == 3 && grad_out.dim_size(0) == shape.batch &&
                            grad_out.dim_size(1) == length && grad_out.dim_size(2) == shape.dim_v,
                   absl::StrCat("grad_out must be [batch, query length, value dim], got ",
                                grad_out.shape().DebugString())) ||
        !CheckThat(ctx, grad_norm.NumElements() == 0 || (grad_norm.dims() == 2 && grad_norm.dim_size(0) == shape.batch &&
                                                         grad_norm.dim_size(1) == length),
                   absl::StrCat("grad_norm must be [batch, query length] or empty, got ",
                                grad_norm.shape().DebugString())))
      return;
    Tensor *grad_query = nullptr, *grad_key = nullptr, *grad_value = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, query.shape(), &grad_query));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, ctx->input(1).shape(), &grad_key));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, ctx->input(2).shape(), &grad_value));
    // Per slot scale * dS of one chunk of batch elements, passed from the column pass to the row pass.
    Tensor slot_blocks;
    const int64_t chunk = GradChunkSize(shape.batch, shape.num_slots, sizeof(T));
    OP_REQUIRES_OK(ctx, ctx->allocate_temp(::tensorflow::DataTypeToEnum<T>::value,
                                           TensorShape({chunk, shape.num_slots, kBlock, kBlock}), &slot_blocks));
    TfParallelFor pf(ctx);
    AttentionGrad<T>(pf, shape, query.flat<T>().data(), ctx->input(1).flat<T>().data(), ctx->input(2).flat<T>().data(),
                     indices.flat<int32_t>().data(), weights.flat<T>().data(), grad_out.flat<T>().data(),
                     grad_norm.NumElements() == 0 ? nullptr : grad_norm.flat<T>().data(),
                     grad_query->flat<T>().data(), grad_key->flat<T>().data(), grad_value->flat<T>().data(),
                     slot_blocks.flat<T>().data());
  }

 private:
  float scale_ = 1.0f;
};

#define TFMODELS_REGISTER_CPU(T)                                                                              \
  REGISTER_KERNEL_BUILDER(                                                                                    \
      Name("TFModels>BlockSparseSddmm").Device(::tensorflow::DEVICE_CPU).TypeConstraint<T>("T"),             \
      SddmmOp<CpuDevice, T>);                                                                                 \
  REGISTER_KERNEL_BUILDER(                                                                                    \
      Name("TFModels>BlockSparseSpmm").Device(::tensorflow::DEVICE_CPU).TypeConstraint<T>("T"),              \
      SpmmOp<CpuDevice, T>);                                                                                  \
  REGISTER_KERNEL_BUILDER(                                                                                    \
      Name("TFModels>BlockSparseRowMax").Device(::tensorflow::DEVICE_CPU).TypeConstraint<T>("T"),             \
      RowReduceOp<CpuDevice, T, true>);                                                                       \
  REGISTER_KERNEL_BUILDER(                                                                                    \
      Name("TFModels>BlockSparseRowSum").Device(::tensorflow::DEVICE_CPU).TypeConstraint<T>("T"),             \
      RowReduceOp<CpuDevice, T, false>);                                                                      \
  REGISTER_KERNEL_BUILDER(                                                                                    \
      Name("TFModels>BlockSparseAttention").Device(::tensorflow::DEVICE_CPU).TypeConstraint<T>("T"),         \
      AttentionCpuOp<T>);                                                                                     \
  REGISTER_KERNEL_BUILDER(                                                                                    \
      Name("TFModels>BlockSparseAttentionGrad").Device(::tensorflow::DEVICE_CPU).TypeConstraint<T>("T"),     \
      AttentionGradCpuOp<T>);

TFMODELS_REGISTER_CPU(float)
TFMODELS_REGISTER_CPU(double)
#undef TFMODELS_REGISTER_CPU

#if GOOGLE_CUDA
// Block counts are read on the host.
#define TFMODELS_REGISTER_GPU(T)                                                                              \
  REGISTER_KERNEL_BUILDER(                                                                                    \
      Name("TFModels>BlockSparseSddmm").Device(::tensorflow::DEVICE_GPU).TypeConstraint<T>("T"),             \
      SddmmOp<GpuDevice, T>);                                                                                 \
  REGISTER_KERNEL_BUILDER(Name("TFModels>BlockSparseSpmm")                                                    \
                              .Device(::tensorflow::DEVICE_GPU)                                               \
                              .TypeConstraint<T>("T")                                                         \
                              .HostMemory("num_out_blocks"),                                                  \
                          SpmmOp<GpuDevice, T>);                                                              \
  REGISTER_KERNEL_BUILDER(Name("TFModels>BlockSparseRowMax")                                                  \
                              .Device(::tensorflow::DEVICE_GPU)                                               \
                              .TypeConstraint<T>("T")                                                         \
                              .HostMemory("num_row_blocks")                                                   \
                              .HostMemory("num_col_blocks"),                                                  \
                          RowReduceOp<GpuDevice, T, true>);                                                   \
  REGISTER_KERNEL_BUILDER(Name("TFModels>BlockSparseRowSum")                                                  \
                              .Device(::tensorflow::DEVICE_GPU)                                               \
                              .TypeConstraint<T>("T")                                                         \
                              .HostMemory("num_row_blocks")                                                   \
                              .HostMemory("num_col_blocks"),                                                  \
                          RowReduceOp<GpuDevice, T, false>);

TFMODELS_REGISTER_GPU(float)
TFMODELS_REGISTER_GPU(double)
#undef TFMODELS_REGISTER_GPU
#endif  // GOOGLE_CUDA

}  // namespace block_sparse
}  // namespace tfmodels
