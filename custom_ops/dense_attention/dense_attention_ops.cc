// Fused dense softmax attention for CPU inference.
//
//   TFModels>DenseAttention(query, key, value, bias; scale) -> context
//       query [B, H, Q, D], key [B, H, K, D], value [B, H, K, E]; bias [B or 1, H or 1, Q or 1, K], additive,
//       added to the scaled scores (padding masks, relative position biases).
//       context = softmax((query * scale) key^T + bias) value, [B, H, Q, E].
//
// Why: TensorFlow computes dense attention as three ops over a [B, H, Q, K] tensor in memory (the score matmul,
// the softmax, the probability matmul). At long sequences that tensor is far larger than the caches, and the
// softmax between the two matmuls runs at memory speed (on a 2-core Xeon it took as long as both matmuls). Here
// each task takes a block of query rows of one head, computes its rows of scores into a cache-sized scratch,
// applies bias and softmax there and multiplies by the values before moving on: the scores never leave the cache.
// The products are register tiles (dense_attention_kernels.h); tasks run on TF's intra-op thread pool.
//
// There is no gradient op: tfmodels.ops.dense_attention recomputes the backward pass with stock TF ops.
#include <algorithm>
#include <cstdint>
#include <vector>

#include "Eigen/Core"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/tf_checks.h"
#include "common/tf_parallel.h"
#include "dense_attention/dense_attention_kernels.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace tfmodels {
namespace dense_attention {

using ::tensorflow::OpKernel;
using ::tensorflow::OpKernelConstruction;
using ::tensorflow::OpKernelContext;
using ::tensorflow::Tensor;
using ::tensorflow::shape_inference::InferenceContext;
using ::tensorflow::shape_inference::ShapeHandle;

// Scores of one task stay under this many floats (1 MiB): with the task's query rows and output they fit the
// L2 cache of current x86 server cores (1-2 MiB).
constexpr int64_t kScratchFloats = int64_t{1} << 18;

absl::Status Shape(InferenceContext* c) {
  ShapeHandle query, key, value, bias;
  TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 4, &query));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 4, &key));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(2), 4, &value));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(3), 4, &bias));
  ShapeHandle output;
  TF_RETURN_IF_ERROR(c->ReplaceDim(query, 3, c->Dim(value, 3), &output));
  c->set_output(0, output);
  return absl::OkStatus();
}

using RowMajor = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using ConstRows = Eigen::Map<const RowMajor>;

class DenseAttentionOp : public OpKernel {
 public:
  explicit DenseAttentionOp(OpKernelConstruction* context) : OpKernel(context) {
    OP_REQUIRES_OK(context, context->GetAttr("scale", &scale_));
  }

  void Compute(OpKernelContext* context) override {
    const Tensor& query = context->input(0);
    const Tensor& key = context->input(1);
    const Tensor& value = context->input(2);
    const Tensor& bias = context->input(3);
    if (!CheckRank(context, query, 4, "query") || !CheckRank(context, key, 4, "key") ||
        !CheckRank(context, value, 4, "value") || !CheckRank(context, bias, 4, "bias")) {
      return;
    }
    const int64_t batch = query.dim_size(0), heads = query.dim_size(1), queries = query.dim_size(2);
    const int64_t dim = query.dim_size(3), keys = key.dim_size(2), value_dim = value.dim_size(3);
    if (!CheckDim(context, key, 0, batch, "key", "batch") || !CheckDim(context, key, 1, heads, "key", "heads") ||
        !CheckDim(context, key, 3, dim, "key", "the query's head size") ||
        !CheckDim(context, value, 0, batch, "value", "batch") ||
        !CheckDim(context, value, 1, heads, "value", "heads") ||
        !CheckDim(context, value, 2, keys, "value", "the number of keys") ||
        !CheckDim(context, bias, 3, keys, "bias", "the number of keys")) {
      return;
    }
    const int64_t full[3] = {batch, heads, queries};
    for (int axis = 0; axis < 3; ++axis) {
      if (!CheckThat(context, bias.dim_size(axis) == 1 || bias.dim_size(axis) == full[axis],
                     absl::StrCat("bias dimension ", axis, " must be 1 or ", full[axis], ", got shape ",
                                  bias.shape().DebugString()))) {
        return;
      }
    }
    Tensor* output = nullptr;
    OP_REQUIRES_OK(context, context->allocate_output(
                                0, tensorflow::TensorShape({batch, heads, queries, value_dim}), &output));
    if (output->NumElements() == 0) return;
    if (keys == 0) {  // no keys: an empty sum, as the twin's matmul gives
      output->flat<float>().setZero();
      return;
    }
    // Strides of the bias over batch, heads and query rows: 0 where it broadcasts.
    const int64_t bias_row = bias.dim_size(2) == 1 ? 0 : keys;
    const int64_t bias_head = bias.dim_size(1) == 1 ? 0 : bias.dim_size(2) * keys;
    const int64_t bias_batch = bias.dim_size(0) == 1 ? 0 : bias.dim_size(1) * bias.dim_size(2) * keys;

    const int64_t padded_keys = RoundUp(keys, kTileColumns), padded_value_dim = RoundUp(value_dim, kLanes);
    const int64_t head_count = batch * heads;
    // The keys of every head as panels (PackKeyPanels) and the values padded to whole vectors ([keys, padded E]),
    // once per call: the tiles then read both in place.
    Tensor key_panels, values_padded;
    OP_REQUIRES_OK(context, context->allocate_temp(tensorflow::DT_FLOAT,
                                                   tensorflow::TensorShape({head_count, dim, padded_keys}), &key_panels));
    OP_REQUIRES_OK(context, context->allocate_temp(tensorflow::DT_FLOAT, tensorflow::TensorShape(
                                {head_count, keys, padded_value_dim}), &values_padded));
    const float* q = query.flat<float>().data();
    const float* k = key.flat<float>().data();
    const float* v = value.flat<float>().data();
    const float* b = bias.flat<float>().data();
    float* kt = key_panels.flat<float>().data();
    float* vp = values_padded.flat<float>().data();
    float* out = output->flat<float>().data();
    TfParallelFor parallel_for(context);
    parallel_for(head_count, keys * (dim + value_dim) * 2, [&](int64_t begin, int64_t end) {
      for (int64_t head = begin; head < end; ++head) {
        PackKeyPanels(k + head * keys * dim, keys, dim, kt + head * dim * padded_keys);
        Eigen::Map<RowMajor> padded(vp + head * keys * padded_value_dim, keys, padded_value_dim);
        padded.rightCols(padded_value_dim - value_dim).setZero();
        padded.leftCols(value_dim) = ConstRows(v + head * keys * value_dim, keys, value_dim);
      }
    });

    // Query rows per task: their scores fill the scratch, in whole tiles of rows.
    int64_t rows = std::max<int64_t>(kTileRows, kScratchFloats / padded_keys / kTileRows * kTileRows);
    rows = std::min(rows, queries);
    const int64_t blocks = (queries + rows - 1) / rows;
    // Rows of scores one vector longer than the keys: rows a multiple of 4 KB apart would put a tile's stores
    // and its reads of a key panel on the same L1 sets (4K aliasing).
    const int64_t scores_stride = padded_keys + kLanes;
    const float scale = scale_;
    auto work = [&](int64_t begin, int64_t end) {
      std::vector<float> scores(rows * scores_stride), scaled_query(rows * dim), context_rows(rows * padded_value_dim);
      std::vector<float> inverse_sums(rows);
      for (int64_t task = begin; task < end; ++task) {
        const int64_t head = task / blocks;  // batch index * heads + head index
        const int64_t first = (task % blocks) * rows;
        const int64_t count = std::min(rows, queries - first);
        // The query is scaled before the product, as the twin does (the same rounding).
        Eigen::Map<RowMajor>(scaled_query.data(), count, dim) =
            ConstRows(q + (head * queries + first) * dim, count, dim) * scale;
        QueryKeyScores(scaled_query.data(), count, dim, kt + head * dim * padded_keys,
                       padded_keys / kTileColumns, scores.data(), scores_stride);
        const float* bias_rows = b + (head / heads) * bias_batch + (head % heads) * bias_head + first * bias_row;
        for (int64_t r = 0; r < count; ++r) {
          inverse_sums[r] = ExponentiateRow(scores.data() + r * scores_stride, bias_rows + r * bias_row, keys);
        }
        ProbabilityValues(scores.data(), scores_stride, count, vp + head * keys * padded_value_dim, keys,
                          padded_value_dim, context_rows.data(), padded_value_dim);
        // Softmax's normalisation, applied to the output rows: value_dim products per row instead of keys.
        Eigen::Map<RowMajor>(out + (head * queries + first) * value_dim, count, value_dim) =
            Eigen::Map<Eigen::VectorXf>(inverse_sums.data(), count).asDiagonal() *
            Eigen::Map<RowMajor, 0, Eigen::OuterStride<>>(context_rows.data(), count, value_dim,
                                                          Eigen::OuterStride<>(padded_value_dim));
      }
    };
    parallel_for(head_count * blocks, rows * keys * (2 * dim + 2 * value_dim + 20), work);
  }

 private:
  float scale_;
};

}  // namespace dense_attention
}  // namespace tfmodels

REGISTER_OP("TFModels>DenseAttention")
    .Input("query: float")
    .Input("key: float")
    .Input("value: float")
    .Input("bias: float")
    .Output("context: float")
    .Attr("scale: float")
    .SetShapeFn(tfmodels::dense_attention::Shape)
    .Doc("softmax((query * scale) key^T + bias) value per head, with the scores kept in cache-sized blocks.");

REGISTER_KERNEL_BUILDER(Name("TFModels>DenseAttention").Device(tensorflow::DEVICE_CPU),
                        tfmodels::dense_attention::DenseAttentionOp);
