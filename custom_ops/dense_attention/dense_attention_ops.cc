// Fused dense softmax attention for CPU inference.
//
//   TFModels>DenseAttention(query, key, value, bias; scale) -> context
//       query [B, H, Q, D], key [B, H, K, D], value [B, H, K, E]; bias [B or 1, H or 1, Q or 1, K], additive,
//       added to the scaled scores (padding masks, relative position biases).
//       context = softmax((query * scale) key^T + bias) value, [B, H, Q, E].
//       T (every input and the output): float32 or bfloat16. bfloat16 is computed in float32 (scores, softmax,
//       sums) and rounded once at the output; both products run on bfloat16 AMX tiles or AVX512-BF16 vectors
//       where the CPU has them (dense_attention_bf16.h), elsewhere the inputs are converted to float32 while
//       being packed.
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
#include <type_traits>
#include <vector>

#include "Eigen/Core"
#include "absl/strings/str_cat.h"
#include "common/tf_checks.h"
#include "common/tf_parallel.h"
#include "dense_attention/attention_op_common.h"
#include "dense_attention/dense_attention_bf16.h"
#include "dense_attention/dense_attention_kernels.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"

namespace tfmodels {
namespace dense_attention {

using ::tensorflow::OpKernelContext;
using ::tensorflow::Tensor;

template <typename T>
class DenseAttentionOp : public ScaledAttentionOp {
 public:
  using ScaledAttentionOp::ScaledAttentionOp;

  void Compute(OpKernelContext* context) override {
    const Tensor& query = context->input(0);
    const Tensor& key = context->input(1);
    const Tensor& value = context->input(2);
    const Tensor& bias = context->input(3);
    AttentionShapes shapes;
    if (!CheckQueryKeyValue(context, query, key, value, &shapes) ||
        !CheckBias(context, bias, shapes.batch, shapes.heads, shapes.queries, shapes.keys, &shapes.bias)) {
      return;
    }
    Tensor* output = nullptr;
    OP_REQUIRES_OK(context, context->allocate_output(0, tensorflow::TensorShape({shapes.batch, shapes.heads,
                                                                                 shapes.queries, shapes.value_dim}),
                                                     &output));
    if (output->NumElements() == 0) return;
    if (shapes.keys == 0) {  // no keys: an empty sum, as the twin's matmul gives
      output->flat<T>().setZero();
      return;
    }
    // The softmax reads the bias as float32: a bfloat16 bias is converted once.
    const float* b;
    Tensor bias_float;
    if constexpr (std::is_same_v<T, float>) {
      b = bias.flat<float>().data();
    } else {
      OP_REQUIRES_OK(context, context->allocate_temp(tensorflow::DT_FLOAT, bias.shape(), &bias_float));
      Eigen::Map<Eigen::ArrayXf>(bias_float.flat<float>().data(), bias.NumElements()) =
          Eigen::Map<const Eigen::Array<T, Eigen::Dynamic, 1>>(bias.flat<T>().data(), bias.NumElements())
              .template cast<float>();
      b = bias_float.flat<float>().data();
    }
    const T* q = query.flat<T>().data();
    const T* k = key.flat<T>().data();
    const T* v = value.flat<T>().data();
    T* out = output->flat<T>().data();
#ifdef TFMODELS_DENSE_ATTENTION_BF16
    if constexpr (std::is_same_v<T, tensorflow::bfloat16>) {
      bf16::Kernel kernel;
      OP_REQUIRES(context, bf16::ChosenKernel(&kernel),
                  tensorflow::errors::InvalidArgument(
                      "TFMODELS_DENSE_ATTENTION_BF16 must be amx, avx512_bf16 or float32 (or unset), got '",
                      std::getenv("TFMODELS_DENSE_ATTENTION_BF16"), "'"));
      if (kernel != bf16::Kernel::kFloat32) {
        return ComputeBf16(context, shapes, kernel, reinterpret_cast<const uint16_t*>(q),
                           reinterpret_cast<const uint16_t*>(k), reinterpret_cast<const uint16_t*>(v), b, out);
      }
    }
#endif
    ComputeFloat(context, shapes, q, k, v, b, out);
  }

 private:
  // The bias rows of AttendInBlocks: the bias tensor's own, in place.
  struct BiasRows {
    const float* bias;
    const BiasLayout* layout;
    const float* rows = nullptr;
    void Start(int64_t head, int64_t first, int64_t /*count*/) { rows = layout->Rows(bias, head, first); }
    const float* Row(int64_t r) const { return rows + r * layout->row; }
  };

  // The products on the vector tiles of dense_attention_kernels.h, in float32 (bfloat16 inputs converted).
  void ComputeFloat(OpKernelContext* context, const AttentionShapes& s, const T* q, const T* k, const T* v,
                    const float* b, T* out) {
    // Query rows per task: their scores fill the scratch, in whole tiles of rows.
    const int64_t padded_keys = RoundUp(s.keys, kTileColumns);
    int64_t rows = std::max<int64_t>(kTileRows, kScratchFloats / padded_keys / kTileRows * kTileRows);
    rows = std::min(rows, s.queries);
    AttendInBlocks(context, s, rows, scale_, q, k, v, [&] { return BiasRows{b, &s.bias}; },
                   rows * s.keys * (2 * s.dim + 2 * s.value_dim + 20), out);
  }

#ifdef TFMODELS_DENSE_ATTENTION_BF16
  // The products on bfloat16 (dense_attention_bf16.h: AMX tiles or AVX512-BF16 vectors), the inputs as they are,
  // float32 scores and sums. The keys and values of every head are packed once per call in the layout both
  // kernels read.
  void ComputeBf16(OpKernelContext* context, const AttentionShapes& s, bf16::Kernel kernel, const uint16_t* q,
                   const uint16_t* k, const uint16_t* v, const float* b, T* out) {
    using bf16::kBlock, bf16::kInner, bf16::kTile, bf16::kTileValues;
    const bool amx = kernel == bf16::Kernel::kAmx;
    const int64_t keys = s.keys, dim = s.dim, value_dim = s.value_dim, queries = s.queries;
    const int64_t head_count = s.batch * s.heads;
    const int64_t padded_keys = RoundUp(keys, kBlock), padded_columns = RoundUp(value_dim, kBlock);
    const int64_t chunks = RoundUp(dim, kInner) / kInner, query_stride = chunks * kInner;
    const int64_t key_values = padded_keys * query_stride, value_values = padded_keys * padded_columns;
    Tensor key_tiles, value_tiles;
    OP_REQUIRES_OK(context, context->allocate_temp(tensorflow::DT_UINT16,
                                                   tensorflow::TensorShape({head_count, key_values}), &key_tiles));
    OP_REQUIRES_OK(context, context->allocate_temp(tensorflow::DT_UINT16,
                                                   tensorflow::TensorShape({head_count, value_values}), &value_tiles));
    uint16_t* kt = key_tiles.flat<uint16_t>().data();
    uint16_t* vt = value_tiles.flat<uint16_t>().data();
    TfParallelFor parallel_for(context);
    parallel_for(head_count, keys * (dim + value_dim) * 2, [&](int64_t begin, int64_t end) {
      for (int64_t head = begin; head < end; ++head) {
        bf16::PackKeys(k + head * keys * dim, keys, dim, kt + head * key_values);
        bf16::PackValues(v + head * keys * value_dim, keys, padded_keys, value_dim, vt + head * value_values);
      }
    });

    // Query rows per task, in whole blocks of 32: their scores fill the scratch.
    const int64_t scores_stride = padded_keys + kTile;  // 4K aliasing, as in ComputeFloat
    const int64_t probs_stride = padded_keys + kInner;  // tile loads 8 KB apart would share one L1 set
    int64_t rows = std::max<int64_t>(kBlock, kScratchFloats / scores_stride / kBlock * kBlock);
    rows = std::min(rows, RoundUp(queries, kBlock));
    const int64_t blocks = (queries + rows - 1) / rows;
    // The vector kernel's operands: pairs of inner elements (zeros past the head size and the last key pair
    // with the packing's padding) and groups of 16 output columns.
    const int64_t query_pairs = (dim + 1) / 2, key_pairs = (keys + 1) / 2;
    const int64_t key_groups = (keys + kTile - 1) / kTile, value_groups = (value_dim + kTile - 1) / kTile;
    const float scale = scale_;
    auto work = [&](int64_t begin, int64_t end) {
      std::vector<float> scores(rows * scores_stride), context_rows(rows * padded_columns), inverse_sums(rows);
      // Zeros past the head size stay (the products' padding); rows past the last query are zeroed per block.
      std::vector<uint16_t> query_rows(rows * query_stride), probs(rows * probs_stride);
      if (amx) bf16::AmxConfigure();
      for (int64_t task = begin; task < end; ++task) {
        const int64_t head = task / blocks;
        const int64_t first = (task % blocks) * rows;
        // AMX multiplies whole blocks of 32 rows; the vectors take the rows there are.
        const int64_t count = std::min(rows, queries - first), tile_rows = amx ? RoundUp(count, kBlock) : count;
        const uint16_t* query_head = q + (head * queries + first) * dim;
        for (int64_t r = 0; r < count; ++r) {
          std::copy(query_head + r * dim, query_head + (r + 1) * dim, query_rows.data() + r * query_stride);
        }
        std::fill(query_rows.data() + count * query_stride, query_rows.data() + tile_rows * query_stride, 0);
        const uint16_t* key_head = kt + head * key_values;
        if (amx) {
          bf16::AmxProduct(query_rows.data(), query_stride, tile_rows, chunks, key_head, 2 * chunks * kTileValues,
                           kTileValues, padded_keys / kBlock, scores.data(), scores_stride);
        } else {
          bf16::VectorProduct(query_rows.data(), query_stride, count, query_pairs, key_head, chunks * kTileValues,
                              key_groups, scores.data(), scores_stride);
        }
        const float* bias_rows = s.bias.Rows(b, head, first);
        for (int64_t r = 0; r < count; ++r) {
          float* row = scores.data() + r * scores_stride;
          inverse_sums[r] = ExponentiateRow(row, bias_rows + r * s.bias.row, keys, scale);
          bf16::RoundRow(row, keys, padded_keys, probs.data() + r * probs_stride);
        }
        std::fill(probs.data() + count * probs_stride, probs.data() + tile_rows * probs_stride, 0);
        const uint16_t* value_head = vt + head * value_values;
        if (amx) {
          bf16::AmxProduct(probs.data(), probs_stride, tile_rows, padded_keys / kInner, value_head,
                           2 * padded_keys * kTile, kTileValues, padded_columns / kBlock, context_rows.data(),
                           padded_columns);
        } else {
          bf16::VectorProduct(probs.data(), probs_stride, count, key_pairs, value_head, padded_keys * kTile,
                              value_groups, context_rows.data(), padded_columns);
        }
        Normalise(inverse_sums.data(), context_rows.data(), padded_columns, count, value_dim,
                  out + (head * queries + first) * value_dim);
      }
      if (amx) bf16::AmxRelease();
    };
    parallel_for(head_count * blocks, rows * keys * (dim + value_dim + 20), work);
  }
#endif

};

}  // namespace dense_attention
}  // namespace tfmodels

REGISTER_OP("TFModels>DenseAttention")
    .Input("query: T")
    .Input("key: T")
    .Input("value: T")
    .Input("bias: T")
    .Output("context: T")
    .Attr("T: {float, bfloat16} = DT_FLOAT")
    .Attr("scale: float")
    .SetShapeFn(tfmodels::dense_attention::AttentionShape)
    .Doc("softmax((query * scale) key^T + bias) value per head, with the scores kept in cache-sized blocks.");

REGISTER_KERNEL_BUILDER(Name("TFModels>DenseAttention").Device(tensorflow::DEVICE_CPU).TypeConstraint<float>("T"),
                        tfmodels::dense_attention::DenseAttentionOp<float>);
REGISTER_KERNEL_BUILDER(
    Name("TFModels>DenseAttention").Device(tensorflow::DEVICE_CPU).TypeConstraint<tensorflow::bfloat16>("T"),
    tfmodels::dense_attention::DenseAttentionOp<tensorflow::bfloat16>);
