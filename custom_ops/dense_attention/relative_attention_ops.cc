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

#include "absl/strings/str_cat.h"
#include "common/tf_checks.h"
#include "common/tf_parallel.h"
#include "dense_attention/attention_op_common.h"
#include "dense_attention/dense_attention_kernels.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"

namespace tfmodels {
namespace dense_attention {

using ::tensorflow::OpKernelContext;
using ::tensorflow::Tensor;

// Query rows per task at most (8 tiles): a block of rows meets K + rows - 1 positions, so fewer rows waste fewer
// position products (here at most ~1.1x the K per row that the twin's shift keeps, at K = 512).
constexpr int64_t kMaxRows = 8 * kTileRows;

class RelativeAttentionOp : public ScaledAttentionOp {
 public:
  using ScaledAttentionOp::ScaledAttentionOp;

  void Compute(OpKernelContext* context) override {
    const Tensor& query = context->input(0);
    const Tensor& key = context->input(1);
    const Tensor& value = context->input(2);
    const Tensor& position_query = context->input(3);
    const Tensor& position_key = context->input(4);
    const Tensor& bias = context->input(5);
    AttentionShapes s;
    if (!CheckQueryKeyValue(context, query, key, value, &s) ||
        !CheckRank(context, position_query, 4, "position_query") ||
        !CheckRank(context, position_key, 4, "position_key")) {
      return;
    }
    const int64_t positions = position_key.dim_size(2);
    if (!CheckThat(context, position_query.shape() == query.shape(),
                   absl::StrCat("position_query must have the query's shape ", query.shape().DebugString(),
                                ", got ", position_query.shape().DebugString())) ||
        !CheckThat(context, position_key.dim_size(0) == 1 || position_key.dim_size(0) == s.batch,
                   absl::StrCat("position_key dimension 0 must be 1 or ", s.batch, ", got shape ",
                                position_key.shape().DebugString())) ||
        !CheckDim(context, position_key, 1, s.heads, "position_key", "heads") ||
        !CheckDim(context, position_key, 3, s.dim, "position_key", "the query's head size") ||
        !CheckThat(context, positions >= s.keys + s.queries,
                   absl::StrCat("position_key must hold at least keys + queries = ", s.keys + s.queries,
                                " relative positions, got shape ", position_key.shape().DebugString())) ||
        !CheckBias(context, bias, s.batch, s.heads, s.queries, s.keys, &s.bias)) {
      return;
    }
    Tensor* output = nullptr;
    OP_REQUIRES_OK(context, context->allocate_output(
                                0, tensorflow::TensorShape({s.batch, s.heads, s.queries, s.value_dim}), &output));
    if (output->NumElements() == 0) return;
    if (s.keys == 0) {  // no keys: an empty sum, as the twin's matmul gives
      output->flat<float>().setZero();
      return;
    }
    // The position keys as panels (PackKeyPanels), once per call: one set per batch row, or one for all.
    const int64_t position_heads = position_key.dim_size(0) * s.heads;
    const int64_t padded_positions = RoundUp(positions, kTileColumns);
    Tensor position_panels;
    OP_REQUIRES_OK(context, context->allocate_temp(tensorflow::DT_FLOAT, tensorflow::TensorShape(
                                {position_heads, s.dim, padded_positions}), &position_panels));
    const float* pk = position_key.flat<float>().data();
    float* panels = position_panels.flat<float>().data();
    TfParallelFor parallel_for(context);
    parallel_for(position_heads, positions * s.dim * 2, [&](int64_t begin, int64_t end) {
      for (int64_t head = begin; head < end; ++head) {
        PackKeyPanels(pk + head * positions * s.dim, positions, s.dim, panels + head * s.dim * padded_positions);
      }
    });
    // Query rows per task, in whole tiles: their content and position scores fill the scratch.
    const int64_t padded_keys = RoundUp(s.keys, kTileColumns);
    int64_t rows = std::max<int64_t>(kTileRows, kScratchFloats / (2 * padded_keys) / kTileRows * kTileRows);
    rows = std::min({rows, kMaxRows, s.queries});
    const PositionTerm term{&s, position_query.flat<float>().data(), panels, padded_positions,
                            position_key.dim_size(0) == 1, bias.flat<float>().data(), rows};
    AttendInBlocks(context, s, rows, scale_, query.flat<float>().data(), key.flat<float>().data(),
                   value.flat<float>().data(), [&] { return PositionBiasRows(term); },
                   rows * s.keys * (4 * s.dim + 2 * s.value_dim + 20), output->flat<float>().data());
  }

 private:
  // What every thread's PositionBiasRows reads.
  struct PositionTerm {
    const AttentionShapes* s;
    const float* position_query;  // [B, H, Q, D], scaled by the caller
    const float* panels;          // the position keys as panels, [B or 1, H, D, padded_positions]
    int64_t padded_positions;
    bool shared;                  // one set of position keys for every batch row
    const float* bias;
    int64_t rows;                 // query rows per block at most
  };

  // The bias rows of AttendInBlocks: each row's position term (its shifted slice of the block's products with
  // the positions it meets) plus its row of the bias, added in the twin's order.
  class PositionBiasRows {
   public:
    explicit PositionBiasRows(const PositionTerm& term)
        : t_(term),
          // A block's positions span K + rows - 1 from a start that need not begin a panel: at most that plus two
          // panels' slack; rows one vector longer than whole panels (4K aliasing, as the scores).
          stride_(RoundUp(term.s->keys + term.rows + 2 * kTileColumns, kTileColumns) + kLanes),
          products_(term.rows * stride_),
          row_(term.s->keys) {}

    // Row first + r meets positions Q - first - r + [0, K): the block meets [Q - first - count + 1,
    // Q - first + K), computed from the panel holding its first one.
    void Start(int64_t head, int64_t first, int64_t count) {
      const AttentionShapes& s = *t_.s;
      const int64_t lowest = s.queries - first - count + 1, past_highest = s.queries - first + s.keys;
      const int64_t first_panel = lowest / kTileColumns;
      const int64_t panel_count = (past_highest + kTileColumns - 1) / kTileColumns - first_panel;
      const float* panels = t_.panels + (t_.shared ? head % s.heads : head) * s.dim * t_.padded_positions;
      QueryKeyScores(t_.position_query + (head * s.queries + first) * s.dim, count, s.dim,
                     panels + first_panel * s.dim * kTileColumns, panel_count, products_.data(), stride_);
      shift_ = s.queries - first - first_panel * kTileColumns;
      bias_rows_ = s.bias.Rows(t_.bias, head, first);
    }

    const float* Row(int64_t r) {
      const float* shifted = products_.data() + r * stride_ + (shift_ - r);
      const float* bias_row = bias_rows_ + r * t_.s->bias.row;
      for (int64_t j = 0; j < t_.s->keys; ++j) row_[j] = shifted[j] + bias_row[j];
      return row_.data();
    }

   private:
    const PositionTerm& t_;
    int64_t stride_;
    std::vector<float> products_, row_;
    int64_t shift_ = 0;
    const float* bias_rows_ = nullptr;
  };

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
    .SetShapeFn(tfmodels::dense_attention::AttentionShape)
    .Doc("softmax((query * scale) key^T + rel_shift(position_query position_key^T) + bias) value per head, with "
         "the scores kept in cache-sized blocks.");

REGISTER_KERNEL_BUILDER(Name("TFModels>RelativeAttention").Device(tensorflow::DEVICE_CPU),
                        tfmodels::dense_attention::RelativeAttentionOp);
