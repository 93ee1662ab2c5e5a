// Layer normalisation of rows, the TF-free CPU kernel of TFModels>LayerNorm (layer_norm_ops.cc).
//
// Per row of n values, in float32 as Keras computes it: mean, variance = mean((x - mean)^2) (two passes, as
// tf.nn.moments), inv_j = gamma_j / sqrt(variance + epsilon), out_j = x_j inv_j + (beta_j - mean inv_j),
// rounded once to the element type (bfloat16, as its 16 bits, or float32). A row is read from memory once: it
// stays in L1 / L2 across the passes.
#ifndef TFMODELS_LAYER_NORM_KERNELS_H_
#define TFMODELS_LAYER_NORM_KERNELS_H_

#include <cmath>
#include <cstdint>

#include "common/bfloat16.h"

namespace tfmodels {
namespace layer_norm {

// Independent partial sums: the compiler keeps them in one vector register and vectorises the loops (a single
// float accumulator would have to be summed in order, one element at a time).
constexpr int kLanes = 16;

// The elements as float32 and back: bfloat16 bits (uint16_t) or float32 itself.
inline float ToFloat(uint16_t bits) { return BFloat16ToFloat(bits); }
inline float ToFloat(float value) { return value; }
template <typename E>
E FromFloat(float value);
template <>
inline uint16_t FromFloat<uint16_t>(float value) { return FloatToBFloat16(value); }
template <>
inline float FromFloat<float>(float value) { return value; }

// Rows [begin, end) of x ([rows, n] elements E: bfloat16 bits or float) normalised into out; `row` is scratch for
// n floats.
// Without contracting a product and a sum into one FMA: Keras' ops round each product, and where x inv and
// mean inv nearly cancel (a row of nearly equal values, a tiny epsilon), one rounding less shows in the output.
template <typename E>
__attribute__((optimize("fp-contract=off"))) inline void NormaliseRows(const E* x, const float* gamma,
                                                                      const float* beta, float epsilon, int64_t n,
                                                                      int64_t begin, int64_t end, float* row,
                                                                      E* out) {
  const int64_t whole = n / kLanes * kLanes;
  for (int64_t r = begin; r < end; ++r) {
    const E* in = x + r * n;
    float partial[kLanes] = {};
    for (int64_t j = 0; j < whole; j += kLanes)
      for (int l = 0; l < kLanes; ++l) partial[l] += row[j + l] = ToFloat(in[j + l]);
    float sum = 0.0f;
    for (int64_t j = whole; j < n; ++j) sum += row[j] = ToFloat(in[j]);
    for (int l = 0; l < kLanes; ++l) sum += partial[l];
    const float mean = sum / static_cast<float>(n);

    float squares[kLanes] = {};
    for (int64_t j = 0; j < whole; j += kLanes)
      for (int l = 0; l < kLanes; ++l) {
        const float d = row[j + l] - mean;
        squares[l] += d * d;
      }
    float square_sum = 0.0f;
    for (int64_t j = whole; j < n; ++j) square_sum += (row[j] - mean) * (row[j] - mean);
    for (int l = 0; l < kLanes; ++l) square_sum += squares[l];
    const float inverse_std = 1.0f / std::sqrt(square_sum / static_cast<float>(n) + epsilon);

    E* o = out + r * n;
    for (int64_t j = 0; j < n; ++j) {
      const float inv = inverse_std * gamma[j];
      o[j] = FromFloat<E>(row[j] * inv + (-mean * inv + beta[j]));
    }
  }
}

}  // namespace layer_norm
}  // namespace tfmodels

#endif  // TFMODELS_LAYER_NORM_KERNELS_H_
