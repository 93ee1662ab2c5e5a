// The epilogue of a dense layer, the TF-free CPU kernel of TFModels>DenseEpilogue (dense_epilogue_ops.cc):
// out = activation(x + bias) (+ residual), in float32, on float32 values or on bfloat16 values rounded once.
//
// Exact GELU as TF's tf.nn.gelu(approximate=False) computes it in float32, 0.5 x erfc(-x / sqrt(2)): the erfc form
// keeps the negative tail accurate, where 1 + erf(z) would cancel. erfc(|z|) = t exp(-z^2 - 1.26551223 + t P(t)),
// t = 1 / (1 + |z| / 2), the Chebyshev fit of Numerical Recipes' erfcc (relative error below 1.2e-7 for every
// z >= 0), and exp by range reduction to [-ln2/2, ln2/2] and a degree-7 Taylor polynomial (relative error ~5e-9).
// Written branch-free on float32 lanes so that g++ vectorises it: the scalar erfcf of libm would cost more than
// the matmul it follows.
#ifndef TFMODELS_DENSE_EPILOGUE_KERNELS_H_
#define TFMODELS_DENSE_EPILOGUE_KERNELS_H_

#include <cmath>
#include <cstdint>

#include "common/bfloat16.h"

namespace tfmodels {
namespace dense_epilogue {

enum class Activation { kLinear, kGelu };

// `mask` (all ones or all zeros) ? a : b, on the bits. The selects below take this form because with std::max or
// a conditional g++ keeps a branch for AVX2 and runs the GELU scalar, ~7x slower.
inline float Select(uint32_t mask, float a, float b) {
  return BitsToFloat((FloatToBits(a) & mask) | (FloatToBits(b) & ~mask));
}

// exp(y) for y <= 0 (an erfc exponent); 0 below -87, where exp(y) leaves float32's normal range.
inline float ExpOfNonPositive(float y) {
  const uint32_t keep = y >= -87.0f ? 0xffffffffu : 0u;
  const float clamped = Select(keep, y, -87.0f);
  // n = round(y / ln2) by the 1.5 * 2^23 trick (round to nearest, no libm call), r = y - n ln2 in two parts.
  const float n = (clamped * 1.44269504f + 12582912.0f) - 12582912.0f;
  const float r = (clamped - n * 0.693145751953125f) - n * 1.42860677e-06f;
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const float scale = BitsToFloat(static_cast<uint32_t>(static_cast<int32_t>(n) + 127) << 23);
  return Select(keep, p * scale, 0.0f);
}

inline float Gelu(float x) {
  const float z = x * 0.707106781f;
  const float a = std::fabs(z);
  const float t = 1.0f / (1.0f + 0.5f * a);
  float p = 0.17087277f;
  p = p * t - 0.82215223f;
  p = p * t + 1.48851587f;
  p = p * t - 1.13520398f;
  p = p * t + 0.27886807f;
  p = p * t - 0.18628806f;
  p = p * t + 0.09678418f;
  p = p * t + 0.37409196f;
  p = p * t + 1.00002368f;
  const float erfc_a = t * ExpOfNonPositive(-a * a - 1.26551223f + p * t);
  // 1 + erf(z) = erfc(-z): erfc(|z|) itself where z < 0 (no cancellation in the negative tail), else 2 - erfc(z).
  const uint32_t negative = z < 0.0f ? 0xffffffffu : 0u;
  return 0.5f * x * Select(negative, erfc_a, 2.0f - erfc_a);
}

// Element access for the two value types: float32 as is; bfloat16 as its bits, widened on load and rounded on store.
inline float Load(const float* p, int64_t i) { return p[i]; }
inline float Load(const uint16_t* p, int64_t i) { return BFloat16ToFloat(p[i]); }
inline void Store(float* p, int64_t i, float v) { p[i] = v; }
inline void Store(uint16_t* p, int64_t i, float v) { p[i] = FloatToBFloat16(v); }

// Rows [begin, end) of x ([rows, n] values of type T: float, or bfloat16 bits as uint16_t) into out; residual is
// null or [rows, n] like x. Without an activation, one loop per row. With GELU, a row goes through in blocks of
// kBlock columns, each step a plain loop over a float32 buffer (the GELU's loop vectorised alone ran faster than
// one loop doing everything).
constexpr int64_t kBlock = 256;

template <Activation kActivation, typename T>
inline void EpilogueRows(const T* x, const T* bias, const T* residual, int64_t n, int64_t begin, int64_t end,
                         T* out) {
  alignas(64) float v[kBlock];
  for (int64_t row = begin; row < end; ++row) {
    const T* in = x + row * n;
    const T* add = residual == nullptr ? nullptr : residual + row * n;
    T* o = out + row * n;
    if (kActivation == Activation::kLinear && add == nullptr) {
      for (int64_t j = 0; j < n; ++j) Store(o, j, Load(in, j) + Load(bias, j));
    } else if (kActivation == Activation::kLinear) {
      for (int64_t j = 0; j < n; ++j) Store(o, j, Load(in, j) + Load(bias, j) + Load(add, j));
    } else {
      for (int64_t j0 = 0; j0 < n; j0 += kBlock) {
        const int64_t width = n - j0 < kBlock ? n - j0 : kBlock;
        for (int64_t j = 0; j < width; ++j) v[j] = Gelu(Load(in, j0 + j) + Load(bias, j0 + j));
        if (add != nullptr)
          for (int64_t j = 0; j < width; ++j) v[j] += Load(add, j0 + j);
        for (int64_t j = 0; j < width; ++j) Store(o, j0 + j, v[j]);
      }
    }
  }
}

}  // namespace dense_epilogue
}  // namespace tfmodels

#endif  // TFMODELS_DENSE_EPILOGUE_KERNELS_H_
