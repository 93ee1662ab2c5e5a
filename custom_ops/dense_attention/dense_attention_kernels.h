// The arithmetic of the fused dense attention (TF-free): register-tiled products for one block of query rows.
//
// Why our own tiles and not Eigen's matmul: for each block Eigen repacks the whole key (or value) matrix of the
// head and the block's scores into its panel layout, about as much memory traffic as the products themselves at
// head sizes of 64. Here the keys are transposed once per head (KeysT) and the values padded once per head, and
// the tiles read them in place: a tile of R query rows x NV vectors of columns keeps its R x NV accumulators in
// registers (24 of the 32 AVX-512 registers at 6 x 4) and streams one row of keys (or values) per step.
#ifndef TFMODELS_DENSE_ATTENTION_KERNELS_H_
#define TFMODELS_DENSE_ATTENTION_KERNELS_H_

#include <cmath>
#include <cstdint>

#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
#include <immintrin.h>
#endif

namespace tfmodels {
namespace dense_attention {

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

constexpr int kTileRows = 6;     // R: query rows per tile
constexpr int kTileVectors = 4;  // NV: vectors of output columns per tile
constexpr int kTileColumns = kTileVectors * kLanes;

// Rounds n up to a multiple of m.
inline int64_t RoundUp(int64_t n, int64_t m) { return (n + m - 1) / m * m; }

// out[r, c] = sum_i a[r, i] * b[i, c] (plus out's previous value when Accumulate) for R rows and NV vectors of
// columns: a is row-major with stride a_stride (a[r, i] = a[r * a_stride + i]), b row-major with stride
// b_stride, out with stride out_stride.
template <int R, int NV, bool Accumulate>
inline void Tile(const float* a, int64_t a_stride, const float* b, int64_t b_stride, int64_t inner, float* out,
                 int64_t out_stride) {
  Vec acc[R][NV];
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < NV; ++v) acc[r][v] = Accumulate ? Load(out + r * out_stride + v * kLanes) : Zero();
  for (int64_t i = 0; i < inner; ++i) {
    Vec row[NV];
    for (int v = 0; v < NV; ++v) row[v] = Load(b + i * b_stride + v * kLanes);
    for (int r = 0; r < R; ++r) {
      const Vec x = Broadcast(a[r * a_stride + i]);
      for (int v = 0; v < NV; ++v) acc[r][v] = MulAdd(x, row[v], acc[r][v]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < NV; ++v) Store(out + r * out_stride + v * kLanes, acc[r][v]);
}

// A Tile with R (1..kTileRows) known only at run time.
template <int NV, bool Accumulate>
inline void TileRows(int rows, const float* a, int64_t a_stride, const float* b, int64_t b_stride, int64_t inner,
                     float* out, int64_t out_stride) {
  switch (rows) {
    case 6: return Tile<6, NV, Accumulate>(a, a_stride, b, b_stride, inner, out, out_stride);
    case 5: return Tile<5, NV, Accumulate>(a, a_stride, b, b_stride, inner, out, out_stride);
    case 4: return Tile<4, NV, Accumulate>(a, a_stride, b, b_stride, inner, out, out_stride);
    case 3: return Tile<3, NV, Accumulate>(a, a_stride, b, b_stride, inner, out, out_stride);
    case 2: return Tile<2, NV, Accumulate>(a, a_stride, b, b_stride, inner, out, out_stride);
    default: return Tile<1, NV, Accumulate>(a, a_stride, b, b_stride, inner, out, out_stride);
  }
}

// Keys as panels: the keys of one head, transposed and cut into panels of kTileColumns keys, each panel a
// contiguous [dim, kTileColumns] block (zeros past the last key). A tile then reads one 16 KB panel (at head
// size 64) row after row; reading the same columns of a plain [dim, keys] transpose would touch dim cache lines
// a whole row apart, which all fall in one L1 set and evict each other.
// The keys may be bfloat16 (T converts to float): the products and the softmax stay float32.
template <typename T>
inline void PackKeyPanels(const T* key, int64_t keys, int64_t dim, float* panels) {
  const int64_t count = RoundUp(keys, kTileColumns) / kTileColumns;
  for (int64_t p = 0; p < count; ++p) {
    float* panel = panels + p * dim * kTileColumns;
    for (int64_t c = 0; c < kTileColumns; ++c) {
      const int64_t j = p * kTileColumns + c;
      for (int64_t d = 0; d < dim; ++d)
        panel[d * kTileColumns + c] = j < keys ? static_cast<float>(key[j * dim + d]) : 0.0f;
    }
  }
}

// scores[rows, padded keys] = query[rows, dim] . keys, the keys given as panels (PackKeyPanels). Panels outer,
// row tiles inner: each panel stays in L1 while every row tile of the block uses it.
inline void QueryKeyScores(const float* query, int64_t rows, int64_t dim, const float* panels, int64_t panel_count,
                           float* scores, int64_t scores_stride) {
  for (int64_t p = 0; p < panel_count; ++p) {
    const float* panel = panels + p * dim * kTileColumns;
    for (int64_t r = 0; r < rows; r += kTileRows) {
      const int tile_rows = static_cast<int>(rows - r < kTileRows ? rows - r : kTileRows);
      TileRows<kTileVectors, false>(tile_rows, query + r * dim, dim, panel, kTileColumns, dim,
                                    scores + r * scores_stride + p * kTileColumns, scores_stride);
    }
  }
}

// A TileRows with NV (1..kTileVectors) also known only at run time.
template <bool Accumulate>
inline void TileVectors(int vectors, int rows, const float* a, int64_t a_stride, const float* b, int64_t b_stride,
                        int64_t inner, float* out, int64_t out_stride) {
  switch (vectors) {
    case 4: return TileRows<4, Accumulate>(rows, a, a_stride, b, b_stride, inner, out, out_stride);
    case 3: return TileRows<3, Accumulate>(rows, a, a_stride, b, b_stride, inner, out, out_stride);
    case 2: return TileRows<2, Accumulate>(rows, a, a_stride, b, b_stride, inner, out, out_stride);
    default: return TileRows<1, Accumulate>(rows, a, a_stride, b, b_stride, inner, out, out_stride);
  }
}

// Keys per step of ProbabilityValues: a chunk of values (32 KB at 64 values per key) stays in L1 while every
// row tile of the block uses it.
constexpr int64_t kValueChunk = 128;

// out[rows, columns] = probs[rows, keys] . values[keys, columns]; columns a multiple of kLanes, the rows of
// values and out that long.
inline void ProbabilityValues(const float* probs, int64_t probs_stride, int64_t rows, const float* values,
                              int64_t keys, int64_t columns, float* out, int64_t out_stride) {
  for (int64_t k = 0; k < keys; k += kValueChunk) {
    const int64_t inner = keys - k < kValueChunk ? keys - k : kValueChunk;
    for (int64_t r = 0; r < rows; r += kTileRows) {
      const int tile_rows = static_cast<int>(rows - r < kTileRows ? rows - r : kTileRows);
      const float* a = probs + r * probs_stride + k;
      const float* b = values + k * columns;
      for (int64_t c = 0; c < columns; c += kTileColumns) {
        float* o = out + r * out_stride + c;
        const int vectors = static_cast<int>(columns - c < kTileColumns ? (columns - c) / kLanes : kTileVectors);
        // The first chunk of keys starts the sums, the others add to them.
        if (k == 0) {
          TileVectors<false>(vectors, tile_rows, a, probs_stride, b + c, columns, inner, o, out_stride);
        } else {
          TileVectors<true>(vectors, tile_rows, a, probs_stride, b + c, columns, inner, o, out_stride);
        }
      }
    }
  }
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
  Vec vector_sum = Zero();
  const Vec shift = Broadcast(max);
  for (int64_t j = 0; j < whole; j += kLanes) {
    const Vec e = Exp(Sub(Load(row + j), shift));
    Store(row + j, e);
    vector_sum = Add(vector_sum, e);
  }
  float sum = whole ? SumLanes(vector_sum) : 0.0f;
  for (int64_t j = whole; j < length; ++j) {
    row[j] = std::exp(row[j] - max);
    sum += row[j];
  }
  return 1.0f / sum;
}

}  // namespace dense_attention
}  // namespace tfmodels

#endif  // TFMODELS_DENSE_ATTENTION_KERNELS_H_
