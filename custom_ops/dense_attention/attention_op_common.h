// What the two fused attention ops (DenseAttention, RelativeAttention) share around their kernels: the shape
// function, the kernel base with the `scale` attribute, the input checks, the additive bias's broadcast layout,
// the scratch budget, and the float32 attention over blocks of query rows (AttendInBlocks), to which each op
// gives its own bias rows.
#ifndef TFMODELS_DENSE_ATTENTION_ATTENTION_OP_COMMON_H_
#define TFMODELS_DENSE_ATTENTION_ATTENTION_OP_COMMON_H_

#include <algorithm>
#include <cstdint>
#include <vector>

#include "Eigen/Core"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/tf_checks.h"
#include "common/tf_parallel.h"
#include "dense_attention/dense_attention_kernels.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/framework/tensor.h"

namespace tfmodels {
namespace dense_attention {

// Scores of one task stay under this many floats (1 MiB): with the task's query rows and output they fit the
// L2 cache of current x86 server cores (1-2 MiB).
constexpr int64_t kScratchFloats = int64_t{1} << 18;

// The shape function of both ops: every input has rank 4 (query, key and value first), and the output has the
// query's shape with the value's head size.
inline absl::Status AttentionShape(tensorflow::shape_inference::InferenceContext* c) {
  tensorflow::shape_inference::ShapeHandle checked;
  for (int input = 0; input < c->num_inputs(); ++input) {
    TF_RETURN_IF_ERROR(c->WithRank(c->input(input), 4, &checked));
  }
  tensorflow::shape_inference::ShapeHandle output;
  TF_RETURN_IF_ERROR(c->ReplaceDim(c->input(0), 3, c->Dim(c->input(2), 3), &output));
  c->set_output(0, output);
  return absl::OkStatus();
}

// The kernel base of both ops: the `scale` attribute that multiplies query . key.
class ScaledAttentionOp : public tensorflow::OpKernel {
 public:
  explicit ScaledAttentionOp(tensorflow::OpKernelConstruction* context) : OpKernel(context) {
    OP_REQUIRES_OK(context, context->GetAttr("scale", &scale_));
  }

 protected:
  float scale_;
};

template <typename T>
using RowMajor = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <typename T>
using ConstRows = Eigen::Map<const RowMajor<T>>;

// The bias [B or 1, H or 1, Q or 1, K] as strides over batch, heads and query rows: 0 where it broadcasts.
struct BiasLayout {
  int64_t heads = 1, row = 0, head = 0, batch = 0;
  // The bias row of query `first` of head `head` (batch index * heads + head index).
  const float* Rows(const float* bias, int64_t head_index, int64_t first) const {
    return bias + (head_index / heads) * batch + (head_index % heads) * head + first * row;
  }
};

// The shapes of one call: query [B, H, Q, D], key [B, H, K, D], value [B, H, K, E], and the bias's layout.
struct AttentionShapes {
  int64_t batch = 0, heads = 0, queries = 0, keys = 0, dim = 0, value_dim = 0;
  BiasLayout bias;
};

// Checks query, key and value (rank 4, agreeing sizes) and fills their sizes in; false (the op failed with a
// message) otherwise.
inline bool CheckQueryKeyValue(tensorflow::OpKernelContext* context, const tensorflow::Tensor& query,
                               const tensorflow::Tensor& key, const tensorflow::Tensor& value, AttentionShapes* s) {
  if (!CheckRank(context, query, 4, "query") || !CheckRank(context, key, 4, "key") ||
      !CheckRank(context, value, 4, "value")) {
    return false;
  }
  s->batch = query.dim_size(0), s->heads = query.dim_size(1), s->queries = query.dim_size(2);
  s->dim = query.dim_size(3), s->keys = key.dim_size(2), s->value_dim = value.dim_size(3);
  return CheckDim(context, key, 0, s->batch, "key", "batch") && CheckDim(context, key, 1, s->heads, "key", "heads") &&
         CheckDim(context, key, 3, s->dim, "key", "the query's head size") &&
         CheckDim(context, value, 0, s->batch, "value", "batch") &&
         CheckDim(context, value, 1, s->heads, "value", "heads") &&
         CheckDim(context, value, 2, s->keys, "value", "the number of keys");
}

// Checks that the bias has a value per key and broadcasts to [batch, heads, queries] without enlarging it, and
// returns its layout; false (the op failed with a message) otherwise.
inline bool CheckBias(tensorflow::OpKernelContext* context, const tensorflow::Tensor& bias, int64_t batch,
                      int64_t heads, int64_t queries, int64_t keys, BiasLayout* layout) {
  if (!CheckRank(context, bias, 4, "bias") || !CheckDim(context, bias, 3, keys, "bias", "the number of keys")) {
    return false;
  }
  const int64_t full[3] = {batch, heads, queries};
  for (int axis = 0; axis < 3; ++axis) {
    if (!CheckThat(context, bias.dim_size(axis) == 1 || bias.dim_size(axis) == full[axis],
                   absl::StrCat("bias dimension ", axis, " must be 1 or ", full[axis], ", got shape ",
                                bias.shape().DebugString()))) {
      return false;
    }
  }
  layout->heads = heads;
  layout->row = bias.dim_size(2) == 1 ? 0 : keys;
  layout->head = bias.dim_size(1) == 1 ? 0 : bias.dim_size(2) * keys;
  layout->batch = bias.dim_size(0) == 1 ? 0 : bias.dim_size(1) * bias.dim_size(2) * keys;
  return true;
}

// Softmax's normalisation, applied to the output rows (value_dim products per row instead of keys), and the
// one rounding of a bfloat16 output.
template <typename T>
void Normalise(const float* inverse_sums, const float* context_rows, int64_t context_stride, int64_t count,
               int64_t value_dim, T* out) {
  Eigen::Map<RowMajor<T>>(out, count, value_dim) =
      (Eigen::Map<const Eigen::VectorXf>(inverse_sums, count).asDiagonal() *
       Eigen::Map<const RowMajor<float>, 0, Eigen::OuterStride<>>(context_rows, count, value_dim,
                                                                   Eigen::OuterStride<>(context_stride)))
          .template cast<T>();
}

// Softmax attention in float32 on the register tiles of dense_attention_kernels.h (bfloat16 inputs converted while
// packed, the output rounded once). The keys of every head are packed as panels (PackKeyPanels) and the values
// padded to whole vectors ([keys, padded E]) once per call: the tiles then read both in place. Each task takes a
// block of up to `rows` query rows of one head: their scores into a scratch (the query scaled before the product,
// as the twins do), each row's additive bias, the softmax, the values, and the output rows scaled by 1 / the sum.
//
// The bias rows are the caller's: make_bias_rows() makes one object per thread, with
//   void Start(int64_t head, int64_t first, int64_t count);  // before rows [first, first + count) of `head`
//   const float* Row(int64_t r);                               // the bias row (keys values) of row first + r
// (head: batch index * heads + head index). task_cost: a task's work, for the thread pool.
template <typename T, typename MakeBiasRows>
void AttendInBlocks(tensorflow::OpKernelContext* context, const AttentionShapes& s, int64_t rows, float scale,
                    const T* q, const T* k, const T* v, const MakeBiasRows& make_bias_rows, int64_t task_cost,
                    T* out) {
  const int64_t keys = s.keys, dim = s.dim, value_dim = s.value_dim, queries = s.queries;
  const int64_t padded_keys = RoundUp(keys, kTileColumns), padded_value_dim = RoundUp(value_dim, kLanes);
  const int64_t head_count = s.batch * s.heads;
  tensorflow::Tensor key_panels, values_padded;
  OP_REQUIRES_OK(context, context->allocate_temp(tensorflow::DT_FLOAT,
                                                 tensorflow::TensorShape({head_count, dim, padded_keys}), &key_panels));
  OP_REQUIRES_OK(context, context->allocate_temp(tensorflow::DT_FLOAT, tensorflow::TensorShape(
                              {head_count, keys, padded_value_dim}), &values_padded));
  float* kt = key_panels.flat<float>().data();
  float* vp = values_padded.flat<float>().data();
  TfParallelFor parallel_for(context);
  parallel_for(head_count, keys * (dim + value_dim) * 2, [&](int64_t begin, int64_t end) {
    for (int64_t head = begin; head < end; ++head) {
      PackKeyPanels(k + head * keys * dim, keys, dim, kt + head * dim * padded_keys);
      Eigen::Map<RowMajor<float>> padded(vp + head * keys * padded_value_dim, keys, padded_value_dim);
      padded.rightCols(padded_value_dim - value_dim).setZero();
      padded.leftCols(value_dim) = ConstRows<T>(v + head * keys * value_dim, keys, value_dim).template cast<float>();
    }
  });

  const int64_t blocks = (queries + rows - 1) / rows;
  // Rows of scores one vector longer than the keys: rows a multiple of 4 KB apart would put a tile's stores and
  // its reads of a key panel on the same L1 sets (4K aliasing).
  const int64_t scores_stride = padded_keys + kLanes;
  auto work = [&](int64_t begin, int64_t end) {
    std::vector<float> scores(rows * scores_stride), scaled_query(rows * dim), context_rows(rows * padded_value_dim);
    std::vector<float> inverse_sums(rows);
    auto bias_rows = make_bias_rows();
    for (int64_t task = begin; task < end; ++task) {
      const int64_t head = task / blocks;
      const int64_t first = (task % blocks) * rows;
      const int64_t count = std::min(rows, queries - first);
      Eigen::Map<RowMajor<float>>(scaled_query.data(), count, dim) =
          ConstRows<T>(q + (head * queries + first) * dim, count, dim).template cast<float>() * scale;
      QueryKeyScores(scaled_query.data(), count, dim, kt + head * dim * padded_keys, padded_keys / kTileColumns,
                     scores.data(), scores_stride);
      bias_rows.Start(head, first, count);
      for (int64_t r = 0; r < count; ++r) {
        inverse_sums[r] = ExponentiateRow(scores.data() + r * scores_stride, bias_rows.Row(r), keys, 1.0f);
      }
      ProbabilityValues(scores.data(), scores_stride, count, vp + head * keys * padded_value_dim, keys,
                        padded_value_dim, context_rows.data(), padded_value_dim);
      Normalise(inverse_sums.data(), context_rows.data(), padded_value_dim, count, value_dim,
                out + (head * queries + first) * value_dim);
    }
  };
  parallel_for(head_count * blocks, task_cost, work);
}

}  // namespace dense_attention
}  // namespace tfmodels

#endif  // TFMODELS_DENSE_ATTENTION_ATTENTION_OP_COMMON_H_
