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

#include "common/simd.h"

namespace tfmodels {
namespace dense_attention {

// The vector type and math (Vec, kLanes, Exp, ExponentiateRow) are common/simd.h's.
using namespace ::tfmodels::simd;  // NOLINT(build/namespaces)

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

}  // namespace dense_attention
}  // namespace tfmodels

#endif  // TFMODELS_DENSE_ATTENTION_KERNELS_H_
