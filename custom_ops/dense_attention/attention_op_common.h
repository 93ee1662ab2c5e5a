// What the two fused attention ops (DenseAttention, RelativeAttention) share around their kernels: the additive
// bias's broadcast layout and its checks, the scratch budget, and the output's normalisation.
#ifndef TFMODELS_DENSE_ATTENTION_ATTENTION_OP_COMMON_H_
#define TFMODELS_DENSE_ATTENTION_ATTENTION_OP_COMMON_H_

#include <cstdint>

#include "Eigen/Core"
#include "absl/strings/str_cat.h"
#include "common/tf_checks.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/tensor.h"

namespace tfmodels {
namespace dense_attention {

// Scores of one task stay under this many floats (1 MiB): with the task's query rows and output they fit the
// L2 cache of current x86 server cores (1-2 MiB).
constexpr int64_t kScratchFloats = int64_t{1} << 18;

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

}  // namespace dense_attention
}  // namespace tfmodels

#endif  // TFMODELS_DENSE_ATTENTION_ATTENTION_OP_COMMON_H_
