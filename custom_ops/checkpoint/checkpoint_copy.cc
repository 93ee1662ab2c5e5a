// The checkpoint loader's copy: a tensor's values moved from a checkpoint (usually memory-mapped) into the buffer
// that a variable then adopts, transposed where the layouts differ (HF's [out, in] Dense kernels become Keras'
// [in, out]), cast between float32 and bfloat16 where the dtypes differ, with its NaN / Inf values counted on
// the way.
//
// Why compiled: numpy needs three passes for this (a screening scan for NaN / Inf, a cast, a strided copy that
// it can only tile from Python), and for a multi-billion-parameter model those passes were most of the load
// time. Here it is one pass over the bytes, tiled so that both sides stay in cache, on several threads.
//
// These are plain C functions called through ctypes (tfmodels/ops/checkpoint_copy.py); the library registers no
// TensorFlow op. It is built, cached and shipped in the wheel like the op families.
#include <algorithm>
#include <cstdint>
#include <thread>
#include <type_traits>
#include <vector>

#include "common/bfloat16.h"

#if defined(__SSE2__)
#include <immintrin.h>
#endif

namespace {

using tfmodels::RoundToBFloat16;
using tfmodels::WidenBFloat16;

enum DType : int { kBFloat16 = 0, kFloat16 = 1, kFloat32 = 2 };

// The exponent bits of each type: a value is NaN or Inf exactly when they are all set.
constexpr uint16_t kBFloat16Exponent = 0x7f80;
constexpr uint16_t kFloat16Exponent = 0x7c00;
constexpr uint32_t kFloat32Exponent = 0x7f800000u;

inline uint16_t same16(uint16_t bits) { return bits; }
inline uint32_t same32(uint32_t bits) { return bits; }

constexpr int64_t kTile = 64;  // a tile's source rows, its transpose and its destination rows all stay in L1

// out[c][r] = in[r][c] for one 8 x 8 block of 16-bit values (rows in_stride / out_stride elements apart) and one
// 4 x 4 block of 32-bit values: three rounds of interleaves, where the scalar loop reads one element per
// strided load (~5x slower). SSE2 is part of every x86-64 CPU; other CPUs take the scalar loop.
#if defined(__SSE2__)
inline void transpose_block(const uint16_t* in, int64_t in_stride, uint16_t* out, int64_t out_stride) {
  __m128i r[8], t[8], u[8];
  for (int k = 0; k < 8; ++k) r[k] = _mm_loadu_si128(reinterpret_cast<const __m128i*>(in + k * in_stride));
  for (int k = 0; k < 4; ++k) {
    t[k] = _mm_unpacklo_epi16(r[2 * k], r[2 * k + 1]);
    t[k + 4] = _mm_unpackhi_epi16(r[2 * k], r[2 * k + 1]);
  }
  // t[0..3]: columns 0-3 of row pairs (0,1) .. (6,7); t[4..7]: columns 4-7.
  for (int h = 0; h < 2; ++h) {
    u[4 * h + 0] = _mm_unpacklo_epi32(t[4 * h + 0], t[4 * h + 1]);
    u[4 * h + 1] = _mm_unpackhi_epi32(t[4 * h + 0], t[4 * h + 1]);
    u[4 * h + 2] = _mm_unpacklo_epi32(t[4 * h + 2], t[4 * h + 3]);
    u[4 * h + 3] = _mm_unpackhi_epi32(t[4 * h + 2], t[4 * h + 3]);
  }
  // u[4h + 0]: columns 4h, 4h+1 of rows 0-3; u[4h + 1]: columns 4h+2, 4h+3 of rows 0-3; u[4h + 2, 3]: rows 4-7.
  for (int h = 0; h < 2; ++h) {
    for (int p = 0; p < 2; ++p) {
      uint16_t* column = out + (4 * h + 2 * p) * out_stride;
      _mm_storeu_si128(reinterpret_cast<__m128i*>(column), _mm_unpacklo_epi64(u[4 * h + p], u[4 * h + p + 2]));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(column + out_stride),
                       _mm_unpackhi_epi64(u[4 * h + p], u[4 * h + p + 2]));
    }
  }
}

inline void transpose_block(const uint32_t* in, int64_t in_stride, uint32_t* out, int64_t out_stride) {
  __m128 r0 = _mm_loadu_ps(reinterpret_cast<const float*>(in));
  __m128 r1 = _mm_loadu_ps(reinterpret_cast<const float*>(in + in_stride));
  __m128 r2 = _mm_loadu_ps(reinterpret_cast<const float*>(in + 2 * in_stride));
  __m128 r3 = _mm_loadu_ps(reinterpret_cast<const float*>(in + 3 * in_stride));
  _MM_TRANSPOSE4_PS(r0, r1, r2, r3);
  _mm_storeu_ps(reinterpret_cast<float*>(out), r0);
  _mm_storeu_ps(reinterpret_cast<float*>(out + out_stride), r1);
  _mm_storeu_ps(reinterpret_cast<float*>(out + 2 * out_stride), r2);
  _mm_storeu_ps(reinterpret_cast<float*>(out + 3 * out_stride), r3);
}

template <typename S>
constexpr int64_t kBlock = 16 / sizeof(S);  // the block side: one 16-byte vector per block row
#else
template <typename S>
constexpr int64_t kBlock = 1;

template <typename S>
inline void transpose_block(const S* in, int64_t, S* out, int64_t) { *out = *in; }
#endif

// The tile src[i0:i1, j0:j1] transposed into out (out[j - j0][i - i0], rows out_stride elements apart): by blocks
// where the tile is whole, element by element at its ragged edges.
template <typename S>
void transpose_tile(const S* src, int64_t src_stride, int64_t i0, int64_t i1, int64_t j0, int64_t j1, S* out,
                    int64_t out_stride) {
  constexpr int64_t b = kBlock<S>;
  const int64_t rows = i1 - i0, cols = j1 - j0;
  const int64_t whole_rows = rows / b * b, whole_cols = cols / b * b;
  for (int64_t i = 0; i < whole_rows; i += b)
    for (int64_t j = 0; j < whole_cols; j += b)
      transpose_block(src + (i0 + i) * src_stride + j0 + j, src_stride, out + j * out_stride + i, out_stride);
  for (int64_t i = 0; i < rows; ++i) {
    const S* row = src + (i0 + i) * src_stride + j0;
    for (int64_t j = (i < whole_rows ? whole_cols : 0); j < cols; ++j) out[j * out_stride + i] = row[j];
  }
}

// Rows [begin, end) of src ([rows, cols], row stride src_stride elements) into dst: dst[i][j] = convert(src[i][j]),
// or dst[j][i] with `transpose`; dst may be null (count only). Returns the NaN / Inf count of those rows.
template <typename S, typename D, D (*Convert)(S), S kExponent>
int64_t copy_rows(const S* src, int64_t cols, int64_t src_stride, D* dst, int64_t dst_stride, bool transpose,
                  int64_t begin, int64_t end) {
  constexpr bool kSame = std::is_same<S, D>::value;
  alignas(64) S buf[kSame ? 1 : kTile * kTile];  // a converted tile passes through it
  int64_t nonfinite = 0;
  for (int64_t i0 = begin; i0 < end; i0 += kTile) {
    const int64_t i1 = std::min(i0 + kTile, end);
    // Counted a band of rows at a time, which the copy below then reads from cache.
    for (int64_t i = i0; i < i1; ++i) {
      const S* row = src + i * src_stride;
      for (int64_t j = 0; j < cols; ++j) nonfinite += (row[j] & kExponent) == kExponent;
    }
    if (dst == nullptr) continue;
    if (!transpose) {
      for (int64_t i = i0; i < i1; ++i) {
        const S* row = src + i * src_stride;
        D* out = dst + i * dst_stride;
        for (int64_t j = 0; j < cols; ++j) out[j] = Convert(row[j]);
      }
      continue;
    }
    for (int64_t j0 = 0; j0 < cols; j0 += kTile) {
      const int64_t j1 = std::min(j0 + kTile, cols);
      if constexpr (kSame) {
        transpose_tile(src, src_stride, i0, i1, j0, j1, dst + j0 * dst_stride + i0, dst_stride);
      } else {
        transpose_tile(src, src_stride, i0, i1, j0, j1, buf, kTile);
        for (int64_t j = j0; j < j1; ++j) {
          const S* column = buf + (j - j0) * kTile;
          D* out = dst + j * dst_stride + i0;
          for (int64_t i = 0; i < i1 - i0; ++i) out[i] = Convert(column[i]);
        }
      }
    }
  }
  return nonfinite;
}

template <typename S, typename D, D (*Convert)(S), S kExponent>
int64_t copy_parallel(const void* src, int64_t rows, int64_t cols, int64_t src_stride, void* dst,
                      int64_t dst_stride, bool transpose, int threads) {
  // Split on tile boundaries, so that no two threads write the same cache line of a transposed destination.
  const int64_t tiles = (rows + kTile - 1) / kTile;
  threads = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(threads, tiles)));
  std::vector<int64_t> counts(threads, 0);
  auto work = [&](int part) {
    const int64_t begin = std::min(rows, tiles * part / threads * kTile);
    const int64_t end = std::min(rows, tiles * (part + 1) / threads * kTile);
    counts[part] = copy_rows<S, D, Convert, kExponent>(static_cast<const S*>(src), cols, src_stride,
                                                       static_cast<D*>(dst), dst_stride, transpose, begin, end);
  };
  std::vector<std::thread> pool;
  for (int part = 1; part < threads; ++part) pool.emplace_back(work, part);
  work(0);
  for (auto& thread : pool) thread.join();
  int64_t total = 0;
  for (int64_t count : counts) total += count;
  return total;
}

}  // namespace

extern "C" {

// Copies the 2-D array src ([rows, cols] of src_dtype, rows src_stride elements apart, columns adjacent) into
// dst (dst_dtype, rows dst_stride elements apart): dst[i][j] = src[i][j], or dst[j][i] when `transpose` is
// non-zero; dst null only counts. Dtypes: 0 bfloat16, 1 float16, 2 float32. Returns the number of NaN / Inf
// values in src, or -1 for a pair of dtypes it does not convert (the caller then copies another way).
int64_t tfm_checkpoint_copy(const void* src, int src_dtype, int64_t rows, int64_t cols, int64_t src_stride,
                            void* dst, int dst_dtype, int64_t dst_stride, int transpose, int threads) {
  const bool t = transpose != 0;
  if (dst == nullptr) dst_dtype = src_dtype;
  if (src_dtype == kFloat32 && dst_dtype == kFloat32)
    return copy_parallel<uint32_t, uint32_t, same32, kFloat32Exponent>(src, rows, cols, src_stride, dst,
                                                                       dst_stride, t, threads);
  if (src_dtype == kBFloat16 && dst_dtype == kBFloat16)
    return copy_parallel<uint16_t, uint16_t, same16, kBFloat16Exponent>(src, rows, cols, src_stride, dst,
                                                                        dst_stride, t, threads);
  if (src_dtype == kFloat16 && dst_dtype == kFloat16)
    return copy_parallel<uint16_t, uint16_t, same16, kFloat16Exponent>(src, rows, cols, src_stride, dst,
                                                                       dst_stride, t, threads);
  if (src_dtype == kFloat32 && dst_dtype == kBFloat16)
    return copy_parallel<uint32_t, uint16_t, RoundToBFloat16, kFloat32Exponent>(src, rows, cols, src_stride,
                                                                                dst, dst_stride, t, threads);
  if (src_dtype == kBFloat16 && dst_dtype == kFloat32)
    return copy_parallel<uint16_t, uint32_t, WidenBFloat16, kBFloat16Exponent>(src, rows, cols, src_stride,
                                                                               dst, dst_stride, t, threads);
  return -1;
}

}  // extern "C"
