// Vectors of floats and the math on them that the fused attention kernels share (TF-free): the dense attention
// (dense_attention/) and the fused sliding-window attention (sliding_window/banded_attention.h). One SIMD
// vector is AVX-512 (16 lanes), AVX2 with FMA (8) or a scalar fallback (1), chosen by the build's target flags.
#ifndef TFMODELS_COMMON_SIMD_H_
#define TFMODELS_COMMON_SIMD_H_

#include <cmath>
#include <cstdint>

#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
#include <immintrin.h>
#endif

namespace tfmodels {
namespace simd {

// One SIMD vector of floats: AVX-512 (16 lanes), AVX2 with FMA (8) or a scalar fallback (1).
#if defined(__AVX512F__)
using Vec = __m512;
constexpr int kLanes = 16;
inline Vec Zero() { return _mm512_setzero_ps(); }
inline Vec Load(const float* p) { return _mm512_loadu_ps(p); }
inline void Store(float* p, Vec v) { _mm512_storeu_ps(p, v); }
inline Vec Broadcast(float x) { return _mm512_set1_ps(x); }
inline Vec MulAdd(Vec a, Vec b, Vec c) { return _mm512_fmadd_ps(a, b, c); }
inline Vec Add(Vec a, Vec b) { return _mm512_add_ps(a, b); }
inline Vec Sub(Vec a, Vec b) { return _mm512_sub_ps(a, b); }
inline Vec Max(Vec a, Vec b) { return _mm512_max_ps(a, b); }  // b where either is NaN
inline Vec RoundNearest(Vec a) { return _mm512_roundscale_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
inline Vec TimesPowerOfTwo(Vec a, Vec n) { return _mm512_scalef_ps(a, n); }  // a * 2^n, n integral
inline float SumLanes(Vec a) { return _mm512_reduce_add_ps(a); }
inline float MaxLanes(Vec a) { return _mm512_reduce_max_ps(a); }
// Below this exp's result is 0 after TimesPowerOfTwo (under the smallest denormal), as std::exp gives.
constexpr float kExpFloor = -104.0f;
#elif defined(__AVX2__) && defined(__FMA__)
using Vec = __m256;
constexpr int kLanes = 8;
inline Vec Zero() { return _mm256_setzero_ps(); }
inline Vec Load(const float* p) { return _mm256_loadu_ps(p); }
inline void Store(float* p, Vec v) { _mm256_storeu_ps(p, v); }
inline Vec Broadcast(float x) { return _mm256_set1_ps(x); }
inline Vec MulAdd(Vec a, Vec b, Vec c) { return _mm256_fmadd_ps(a, b, c); }
inline Vec Add(Vec a, Vec b) { return _mm256_add_ps(a, b); }
inline Vec Sub(Vec a, Vec b) { return _mm256_sub_ps(a, b); }
inline Vec Max(Vec a, Vec b) { return _mm256_max_ps(a, b); }  // b where either is NaN
inline Vec RoundNearest(Vec a) { return _mm256_round_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
// a * 2^n for integral n in [-126, 127]: n added to a's exponent bits (no scalef before AVX-512).
inline Vec TimesPowerOfTwo(Vec a, Vec n) {
  const __m256i bits = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(a, _mm256_castsi256_ps(bits));
}
inline float SumLanes(Vec a) {
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, a);
  return ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]));
}
inline float MaxLanes(Vec a) {
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, a);
  float m = lanes[0];
  for (int i = 1; i < 8; ++i) m = lanes[i] > m ? lanes[i] : m;
  return m;
}
// The smallest argument whose 2^n stays a normal float (n >= -126): exp there is ~1e-38 instead of 0, which no
// float32 sum of probabilities can see.
constexpr float kExpFloor = -87.0f;
#else
using Vec = float;
constexpr int kLanes = 1;
inline Vec Zero() { return 0.0f; }
inline Vec Load(const float* p) { return *p; }
inline void Store(float* p, Vec v) { *p = v; }
inline Vec Broadcast(float x) { return x; }
inline Vec MulAdd(Vec a, Vec b, Vec c) { return a * b + c; }
inline Vec Add(Vec a, Vec b) { return a + b; }
inline Vec Sub(Vec a, Vec b) { return a - b; }
inline Vec Max(Vec a, Vec b) { return std::isnan(a) || std::isnan(b) ? b : (a > b ? a : b); }
inline Vec RoundNearest(Vec a) { return std::nearbyint(a); }
inline Vec TimesPowerOfTwo(Vec a, Vec n) { return std::ldexp(a, static_cast<int>(n)); }
inline float SumLanes(Vec a) { return a; }
inline float MaxLanes(Vec a) { return a; }
constexpr float kExpFloor = -104.0f;
#endif

// exp(x) for x <= 0 (scores minus their row's maximum), to about 1 ulp. Eigen's vectorised exp, which TF's
// headers provide, took 5x as long here: the softmax then cost as much as both products.
// Cody-Waite: x = n ln2 + r with |r| <= ln2 / 2 (ln2 split in two so that n ln2 is exact), exp(r) by its Taylor
// polynomial of degree 6 (error below 2e-7 on that interval), times 2^n. NaN stays NaN (Max keeps its second
// operand), and arguments under kExpFloor give 0 or a negligible ~1e-38.
inline Vec Exp(Vec x) {
  x = Max(Broadcast(kExpFloor), x);
  const Vec n = RoundNearest(MulAdd(x, Broadcast(1.44269504088896341f), Zero()));
  Vec r = MulAdd(n, Broadcast(-0.693145751953125f), x);  // ln2's high part: n * it is exact for |n| < 2^12
  r = MulAdd(n, Broadcast(-1.428606765330187e-06f), r);  // the rest of ln2
  Vec p = Broadcast(1.0f / 720);
  p = MulAdd(p, r, Broadcast(1.0f / 120));
  p = MulAdd(p, r, Broadcast(1.0f / 24));
  p = MulAdd(p, r, Broadcast(1.0f / 6));
  p = MulAdd(p, r, Broadcast(0.5f));
  p = MulAdd(p, r, Broadcast(1.0f));
  p = MulAdd(p, r, Broadcast(1.0f));
  return TimesPowerOfTwo(p, n);
}

// The largest of x[0 .. length) (-inf when empty; a NaN may be missed, see ExponentiateRow).
inline float MaxOf(const float* x, int64_t length) {
  const int64_t whole = length / kLanes * kLanes;
  Vec vector_max = Broadcast(-INFINITY);
  float max = -INFINITY;
  for (int64_t j = 0; j < whole; j += kLanes) vector_max = Max(vector_max, Load(x + j));
  for (int64_t j = whole; j < length; ++j) max = x[j] > max ? x[j] : max;
  return whole ? std::fmax(max, MaxLanes(vector_max)) : max;
}

// x[j] = exp(x[j] - shift) for j < length (x[j] <= shift); returns their sum.
inline float ExponentiateShifted(float* x, int64_t length, float shift) {
  const int64_t whole = length / kLanes * kLanes;
  Vec vector_sum = Zero();
  const Vec vector_shift = Broadcast(shift);
  for (int64_t j = 0; j < whole; j += kLanes) {
    const Vec e = Exp(Sub(Load(x + j), vector_shift));
    Store(x + j, e);
    vector_sum = Add(vector_sum, e);
  }
  float sum = whole ? SumLanes(vector_sum) : 0.0f;
  for (int64_t j = whole; j < length; ++j) {
    x[j] = std::exp(x[j] - shift);
    sum += x[j];
  }
  return sum;
}

// One row of scores: scales it and adds its bias row, then replaces each score s by exp(s - the row's maximum)
// and returns 1 / their sum. The caller scales the row's output by it (once per output value, not once per key).
// The float32 path passes scale 1 (it scales the query, as the twin does; s * 1 + b is s + b exactly); the AMX
// path scales here, in float32, instead of rounding a scaled query to bfloat16.
inline float ExponentiateRow(float* row, const float* bias, int64_t length, float scale) {
  const int64_t whole = length / kLanes * kLanes;
  const Vec vector_scale = Broadcast(scale);
  Vec vector_max = Broadcast(-INFINITY);
  float max = -INFINITY;
  for (int64_t j = 0; j < whole; j += kLanes) {
    const Vec s = MulAdd(Load(row + j), vector_scale, Load(bias + j));
    Store(row + j, s);
    vector_max = Max(vector_max, s);
  }
  for (int64_t j = whole; j < length; ++j) {
    row[j] = std::fma(row[j], scale, bias[j]);
    max = row[j] > max ? row[j] : max;
  }
  // A NaN score may be lost from the maximum, never from the row: its exp is NaN, and so is the sum.
  max = whole ? std::fmax(max, MaxLanes(vector_max)) : max;
  return 1.0f / ExponentiateShifted(row, length, max);
}

}  // namespace simd
}  // namespace tfmodels

#endif  // TFMODELS_COMMON_SIMD_H_
