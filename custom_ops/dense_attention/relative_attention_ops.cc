// Fused softmax attention with a relative position term (Transformer-XL / XLNet), for CPU inference in float32.
//
//   TFModels>RelativeAttention(query, key, value, position_query, position_key, bias; scale) -> context
//       query, position_query [B, H, Q, D]; key [B, H, K, D]; value [B, H, K, E];
//       position_key [B or 1, H, R, D] with R >= K + Q; bias [B or 1, H or 1, Q or 1, K], additive.
//       score[i, j] = (query_i * scale) . key_j + (position_query_i . position_key_{j + Q - i} + bias[i, j])
//       context = softmax(score) value, [B, H, Q, E].
//   The position term is the Transformer-XL "rel_shift" of the product position_query position_key^T: query i
//   meets the K positions that start Q - i into the R relative positions (distances K, K - 1, ... in XLNet's
//   encoding). position_query comes scaled, as the twin scales it.
//
// Why: TensorFlow computes the position term as a batched matmul of every query with every position
// ([B, H, Q, R], twice the content scores), then shifts it with reshapes and slices and adds the bias, all through
// memory, before the attention itself. At XLNet's 512 tokens that glue took as long as the attention. Here each
// task takes a block of query rows of one head and computes, into cache-sized scratch, its content scores and the
// products with only the K + rows - 1 positions its rows meet; each row then reads its shifted slice in place,
// and the softmax and the values follow as in DenseAttention (dense_attention_ops.cc), on the same register tiles.
//
// float32 only: bfloat16 takes DenseAttention with the position term computed by the twin (on AMX tiles where the
// CPU has them). There is no gradient op: tfmodels.ops.dense_attention recomputes the backward pass with the twin.
#include <algorithm>
#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/tf_checks.h"
#include "common/tf_parallel.h"
#include "dense_attention/attention_op_common.h"
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

// Query rows per task at most (8 tiles): a block of rows meets K + rows - 1 positions, so fewer rows waste fewer
// position products (here at most ~1.1x the K per row that the twin's shift keeps, at K = 512).
constexpr int64_t kMaxRows = 8 * kTileRows;

absl::Status RelativeShape(InferenceContext* c) {
  ShapeHandle query, value, unused;
  TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 4, &query));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 4, &unused));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(2), 4, &value));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(3), 4, &unused));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(4), 4, &unused));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(5), 4, &unused));
  ShapeHandle output;
  TF_RETURN_IF_ERROR(c->ReplaceDim(query, 3, c->Dim(value, 3), &output));
  c->set_output(0, output);
  return absl::OkStatus();
}

class RelativeAttentionOp : public OpKernel {
 public:
  explicit RelativeAttentionOp(OpKernelConstruction* context) : OpKernel(context) {
    OP_REQUIRES_OK(context, context->GetAttr("scale", &scale_));
  }

  void Compute(OpKernelContext* context) override {
    const Tensor& query = context->input(0);
    const Tensor& key = context->input(1);
    const Tensor& value = context->input(2);
    const Tensor& position_query = context->input(3);
    const Tensor& position_key = context->input(4);
    const Tensor& bias = context->input(5);
    if (!CheckRank(context, query, 4, "query") || !CheckRank(context, key, 4, "key") ||
        !CheckRank(context, value, 4, "value") || !CheckRank(context, position_query, 4, "position_query") ||
        !CheckRank(context, position_key, 4, "position_key")) {
      return;
    }
    Shapes s;
    s.batch = query.dim_size(0), s.heads = query.dim_size(1), s.queries = query.dim_size(2);
    s.dim = query.dim_size(3), s.keys = key.dim_size(2), s.value_dim = value.dim_size(3);
    s.positions = position_key.dim_size(2);
    if (!CheckDim(context, key, 0, s.batch, "key", "batch") || !CheckDim(context, key, 1, s.heads, "key", "heads") ||
        !CheckDim(context, key, 3, s.dim, "key", "the query's head size") ||
        !CheckDim(context, value, 0, s.batch, "value", "batch") ||
        !CheckDim(context, value, 1, s.heads, "value", "heads") ||
        !CheckDim(context, value, 2, s.keys, "value", "the number of keys") ||
        !CheckThat(context, position_query.shape() == query.shape(),
                   absl::StrCat("position_query must have the query's shape ", query.shape().DebugString(),
                                ", got ", position_query.shape().DebugString())) ||
        !CheckThat(context, position_key.dim_size(0) == 1 || position_key.dim_size(0) == s.batch,
                   absl::StrCat("position_key dimension 0 must be 1 or ", s.batch, ", got shape ",
                                position_key.shape().DebugString())) ||
        !CheckDim(context, position_key, 1, s.heads, "position_key", "heads") ||
        !CheckDim(context, position_key, 3, s.dim, "position_key", "the query's head size") ||
        !CheckThat(context, s.positions >= s.keys + s.queries,
                   absl::StrCat("position_key must hold at least keys + queries = ", s.keys + s.queries,
                                " relative positions, got shape ", position_key.shape().DebugString())) ||
        !CheckBias(context, bias, s.batch, s.heads, s.queries, s.keys, &s.bias)) {
      return;
    }
    s.shared_positions = position_key.dim_size(0) == 1;
    Tensor* output = nullptr;
    OP_REQUIRES_OK(context, context->allocate_output(
                                0, tensorflow::TensorShape({s.batch, s.heads, s.queries, s.value_dim}), &output));
    if (output->NumElements() == 0) return;
    if (s.keys == 0) {  // no keys: an empty sum, as the twin's matmul gives
      output->flat<float>().setZero();
      return;
    }
    ComputeBlocks(context, s, query.flat<float>().data(), key.flat<float>().data(), value.flat<float>().data(),
                  position_query.flat<float>().data(), position_key.flat<float>().data(), bias.flat<float>().data(),
                  output->flat<float>().data());
  }

 private:
  struct Shapes {
    int64_t batch, heads, queries, keys, dim, value_dim, positions;
    bool shared_positions;  // one set of position keys for every batch row
    BiasLayout bias;
  };

  void ComputeBlocks(OpKernelContext* context, const Shapes& s, const float* q, const float* k, const float* v,
                     const float* pq, const float* pk, const float* b, float* out) {
    const int64_t keys = s.keys, dim = s.dim, value_dim = s.value_dim, queries = s.queries, heads = s.heads;
    const int64_t padded_keys = RoundUp(keys, kTileColumns), padded_value_dim = RoundUp(value_dim, kLanes);
    const int64_t padded_positions = RoundUp(s.positions, kTileColumns);
    const int64_t head_count = s.batch * heads, position_heads = s.shared_positions ? heads : head_count;
    // Keys and position keys as panels (PackKeyPanels), values padded to whole vectors, once per call.
    Tensor key_panels, position_panels, values_padded;
    OP_REQUIRES_OK(context, context->allocate_temp(tensorflow::DT_FLOAT,
                                                   tensorflow::TensorShape({head_count, dim, padded_keys}), &key_panels));
    OP_REQUIRES_OK(context, context->allocate_temp(tensorflow::DT_FLOAT, tensorflow::TensorShape(
                                {position_heads, dim, padded_positions}), &position_panels));
    OP_REQUIRES_OK(context, context->allocate_temp(tensorflow::DT_FLOAT, tensorflow::TensorShape(
                                {head_count, keys, padded_value_dim}), &values_padded));
    float* kt = key_panels.flat<float>().data();
    float* pt = position_panels.flat<float>().data();
    float* vp = values_padded.flat<float>().data();
    TfParallelFor parallel_for(context);
    parallel_for(head_count, (keys + s.positions) * dim * 2 + keys * value_dim, [&](int64_t begin, int64_t end) {
      for (int64_t head = begin; head < end; ++head) {
        PackKeyPanels(k + head * keys * dim, keys, dim, kt + head * dim * padded_keys);
        if (head < position_heads) {
          PackKeyPanels(pk + head * s.positions * dim, s.positions, dim, pt + head * dim * padded_positions);
        }
        Eigen::Map<RowMajor<float>> padded(vp + head * keys * padded_value_dim, keys, padded_value_dim);
        padded.rightCols(padded_value_dim - value_dim).setZero();
        padded.leftCols(value_dim) = ConstRows<float>(v + head * keys * value_dim, keys, value_dim);
      }
    });

    // Query rows per task, in whole tiles: their content and position scores fill the scratch.
    int64_t rows = std::max<int64_t>(kTileRows, kScratchFloats / (2 * padded_keys) / kTileRows * kTileRows);
    rows = std::min({rows, kMaxRows, queries});
    const int64_t blocks = (queries + rows - 1) / rows;
    // Row strides one vector longer than whole panels: 4K aliasing, as in DenseAttention. A block's positions
    // span K + rows - 1 from a start that need not begin a panel: at most that plus two panels' slack.
    const int64_t scores_stride = padded_keys + kLanes;
    const int64_t position_stride = RoundUp(keys + rows + 2 * kTileColumns, kTileColumns) + kLanes;
    const float scale = scale_;
    auto work = [&](int64_t begin, int64_t end) {
      std::vector<float> scores(rows * scores_stride), position_scores(rows * position_stride);
      std::vector<float> scaled_query(rows * dim), row_bias(keys), context_rows(rows * padded_value_dim);
      std::vector<float> inverse_sums(rows);
      for (int64_t task = begin; task < end; ++task) {
        const int64_t head = task / blocks;  // batch index * heads + head index
        const int64_t first = (task % blocks) * rows;
        const int64_t count = std::min(rows, queries - first);
        // The query is scaled before the product, as the twin does (the same rounding).
        Eigen::Map<RowMajor<float>>(scaled_query.data(), count, dim) =
            ConstRows<float>(q + (head * queries + first) * dim, count, dim) * scale;
        QueryKeyScores(scaled_query.data(), count, dim, kt + head * dim * padded_keys, padded_keys / kTileColumns,
                       scores.data(), scores_stride);
        // Row first + r meets positions Q - first - r + [0, K): the block meets [Q - first - count + 1,
        // Q - first + K), computed from the panel holding its first one (panel_start).
        const int64_t lowest = queries - first - count + 1, past_highest = queries - first + keys;
        const int64_t first_panel = lowest / kTileColumns, panel_start = first_panel * kTileColumns;
        const int64_t panel_count = (past_highest + kTileColumns - 1) / kTileColumns - first_panel;
        const float* panels = pt + (s.shared_positions ? head % heads : head) * dim * padded_positions;
        QueryKeyScores(pq + (head * queries + first) * dim, count, dim, panels + first_panel * dim * kTileColumns,
                       panel_count, position_scores.data(), position_stride);
        const float* bias_rows = s.bias.Rows(b, head, first);
        for (int64_t r = 0; r < count; ++r) {
          const float* shifted = position_scores.data() + r * position_stride + (queries - first - r - panel_start);
          const float* bias_row = bias_rows + r * s.bias.row;
          for (int64_t j = 0; j < keys; ++j) row_bias[j] = shifted[j] + bias_row[j];
          inverse_sums[r] = ExponentiateRow(scores.data() + r * scores_stride, row_bias.data(), keys, 1.0f);
        }
        ProbabilityValues(scores.data(), scores_stride, count, vp + head * keys * padded_value_dim, keys,
                          padded_value_dim, context_rows.data(), padded_value_dim);
        Normalise(inverse_sums.data(), context_rows.data(), padded_value_dim, count, value_dim,
                  out + (head * queries + first) * value_dim);
      }
    };
    parallel_for(head_count * blocks, rows * keys * (4 * dim + 2 * value_dim + 20), work);
  }

  float scale_;
};

}  // namespace dense_attention
}  // namespace tfmodels

REGISTER_OP("TFModels>RelativeAttention")
    .Input("query: float")
    .Input("key: float")
    .Input("value: float")
    .Input("position_query: float")
    .Input("position_key: float")
    .Input("bias: float")
    .Output("context: float")
    .Attr("scale: float")
    .SetShapeFn(tfmodels::dense_attention::RelativeShape)
    .Doc("softmax((query * scale) key^T + rel_shift(position_query position_key^T) + bias) value per head, with "
         "the scores kept in cache-sized blocks.");

REGISTER_KERNEL_BUILDER(Name("TFModels>RelativeAttention").Device(tensorflow::DEVICE_CPU),
                        tfmodels::dense_attention::RelativeAttentionOp);
