// Block-sparse attention primitives (MRA), TF-free CPU implementation on raw pointers.
//
// Layout. A "grid" of row blocks x column blocks of 32 positions each. Per batch element b (for attention: a
// batch x heads "meta batch"), `indices[b, s]` (int32) names the s-th selected block as
//   row_block * num_col_blocks + col_block,   or any negative value for an unused slot.
// A selected block is a dense 32 x 32 tile `blocks[b, s, i, j]` (row position i, column position j).
// Dense operands are row-major [batch, length, dim] with length = num_blocks * 32.
//
//   Sddmm      blocks[b,s,i,j] = sum_d a[b, r*32+i, d] * b[b, c*32+j, d]            (0 for unused slots)
//   Spmm       out[b, r*32+i, :] = sum over slots (r,c) of sum_j blocks[b,s,i,j] * dense[b, c*32+j, :]
//   SpmmT      out[b, c*32+j, :] = sum over slots (r,c) of sum_i blocks[b,s,i,j] * dense[b, r*32+i, :]
//   RowMax     out[b, r*32+i]    = max over slots of row r and over j of blocks[b,s,i,j]  (-inf: no slot)
//   RowSum     out[b, r*32+i]    = sum over slots of row r and over j of blocks[b,s,i,j]  (0: no slot)
//
// And the fused high-resolution part of MRA attention, which needs no block in memory between its steps:
//   Attention  per row block r, over its slots (r, c):  S = scale * q_r k_c^T * key_mask_c[j] (a masked key
//              scores 0), m_i = max over slots and j of S[i][j] (-inf: no slot), A = exp(S - m_i) * key_mask_c[j];
//              out_r = sum A v_c,  norm_i = sum A[i][:],  row_max = m, and weights = A per slot (the only
//              blocks written: for the backward). AttentionGrad gives d query, d key, d value for upstream
//              d out and d norm from the weights (row_max is a stabilising shift: no gradient).
//
// Everything that accumulates is computed per output block, over the slots in index order, so results are
// deterministic and independent of the number of threads. The CPU code is parallelised through a
// `ParallelFor` callable (see common/parallel.h).
#ifndef TFMODELS_BLOCK_SPARSE_KERNELS_H_
#define TFMODELS_BLOCK_SPARSE_KERNELS_H_

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#if defined(__AVX512F__) && !defined(__CUDACC__)
#include <immintrin.h>
#endif

namespace tfmodels {
namespace block_sparse {

constexpr int kBlock = 32;
constexpr int64_t kBlockArea = kBlock * kBlock;

// Returns an empty string when every index is an unused slot (< 0) or a block of the grid; else a message.
inline std::string CheckIndices(const int32_t* indices, int64_t count, int64_t num_row_blocks,
                                int64_t num_col_blocks) {
  const int64_t limit = num_row_blocks * num_col_blocks;
  for (int64_t n = 0; n < count; ++n) {
    if (indices[n] >= limit) {
      return "indices contains " + std::to_string(indices[n]) + " at flat position " + std::to_string(n) +
             ", outside the grid of " + std::to_string(num_row_blocks) + " x " + std::to_string(num_col_blocks) +
             " blocks (valid: -1 for an unused slot, or 0 <= index < " + std::to_string(limit) + ")";
    }
  }
  return std::string();
}

// Slots grouped by their target block (row block, or column block when by_col), per batch element: a CSR with
// offsets [batch, num_targets + 1] and slot lists [batch, num_slots], slots in increasing order.
struct SlotGroups {
  std::vector<int64_t> offsets;
  std::vector<int32_t> slots;
  int64_t num_targets = 0;
  int64_t num_slots = 0;

  const int32_t* begin(int64_t b, int64_t t) const {
    return slots.data() + b * num_slots + offsets[b * (num_targets + 1) + t];
  }
  const int32_t* end(int64_t b, int64_t t) const {
    return slots.data() + b * num_slots + offsets[b * (num_targets + 1) + t + 1];
  }
};

template <typename ParallelFor>
void GroupSlots(const ParallelFor& parallel_for, const int32_t* indices, int64_t batch, int64_t num_slots,
                int64_t num_col_blocks, int64_t num_targets, bool by_col, SlotGroups* groups) {
  groups->num_targets = num_targets;
  groups->num_slots = num_slots;
  groups->offsets.assign(batch * (num_targets + 1), 0);
  groups->slots.assign(batch * num_slots, 0);
  parallel_for(batch, 8 * num_slots + num_targets, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      const int32_t* idx = indices + b * num_slots;
      int64_t* offsets = groups->offsets.data() + b * (num_targets + 1);
      int32_t* slots = groups->slots.data() + b * num_slots;
      for (int64_t s = 0; s < num_slots; ++s) {
        if (idx[s] < 0) continue;
        const int64_t target = by_col ? idx[s] % num_col_blocks : idx[s] / num_col_blocks;
        ++offsets[target + 1];
      }
      for (int64_t t = 0; t < num_targets; ++t) offsets[t + 1] += offsets[t];
      std::vector<int64_t> cursor(offsets, offsets + num_targets);
      for (int64_t s = 0; s < num_slots; ++s) {
        if (idx[s] < 0) continue;
        const int64_t target = by_col ? idx[s] % num_col_blocks : idx[s] / num_col_blocks;
        slots[cursor[target]++] = static_cast<int32_t>(s);
      }
    }
  });
}

// Software prefetch of a list of memory ranges into L2, one 64-byte line per Step(). The fused attention kernels
// read each slot's tiles wherever the indices point, which the hardware prefetchers cannot guess, and waited on
// memory about as long as they computed. Issuing the next target block's lines one per inner-loop iteration of
// the current block's kernels overlaps the two (a burst of prefetches up front does not: it stalls the loads).
class LinePrefetcher {
 public:
  void Clear() {
    count_ = 0;
    next_ = 0;
    line_ = end_ = nullptr;
  }
  // Lines of [p, p + bytes) are requested after those added before; for_write: they will be overwritten.
  void Add(const void* p, int64_t bytes, bool for_write = false) {
    if (count_ < kMaxRanges) ranges_[count_++] = Range{static_cast<const char*>(p), bytes, for_write};
  }
  void Step() {
    while (line_ == end_) {
      if (!NextRange()) return;
    }
#if defined(__GNUC__)
    if (write_) {
      __builtin_prefetch(line_, 1, 1);
    } else {
      __builtin_prefetch(line_, 0, 1);
    }
#endif
    line_ += std::min<int64_t>(64, end_ - line_);
  }

 private:
  struct Range {
    const char* begin;
    int64_t bytes;
    bool for_write;
  };
  static constexpr int kMaxRanges = 64;
  bool NextRange() {
    if (next_ >= count_) return false;
    const Range& r = ranges_[next_++];
    line_ = r.begin;
    end_ = r.begin + r.bytes;
    write_ = r.for_write;
    return true;
  }
  Range ranges_[kMaxRanges];
  int count_ = 0, next_ = 0;
  const char* line_ = nullptr;
  const char* end_ = nullptr;
  bool write_ = false;
};

// Steps prefetch (may be nullptr) once.
inline void PrefetchStep(LinePrefetcher* prefetch) {
  if (prefetch != nullptr) prefetch->Step();
}

// ---------------------------------------------------------------------------------------------------------
// Sddmm: dense x dense -> selected blocks.

// out[32][32] = a_block[32][dim] x b_block[32][dim]^T, with b_block given transposed: bt[dim][32].
// Register-blocked: 8 output rows x 32 columns of accumulators, one broadcast a value per (row, d).
// prefetch (may be nullptr) is stepped once per d of each row group.
template <typename T>
inline void BlockABt(const T* a_block, const T* bt, int64_t dim, T* out, LinePrefetcher* prefetch = nullptr) {
  constexpr int kRows = 8;
  for (int i0 = 0; i0 < kBlock; i0 += kRows) {
    T acc[kRows][kBlock];
    for (int r = 0; r < kRows; ++r)
      for (int j = 0; j < kBlock; ++j) acc[r][j] = T(0);
    const T* a_rows = a_block + i0 * dim;
    for (int64_t d = 0; d < dim; ++d) {
      PrefetchStep(prefetch);
      const T* brow = bt + d * kBlock;
      T v[kRows];
      for (int r = 0; r < kRows; ++r) v[r] = a_rows[r * dim + d];
#pragma GCC ivdep
      for (int j = 0; j < kBlock; ++j) {
        const T bv = brow[j];
        for (int r = 0; r < kRows; ++r) acc[r][j] += v[r] * bv;
      }
    }
    for (int r = 0; r < kRows; ++r)
      for (int j = 0; j < kBlock; ++j) out[(i0 + r) * kBlock + j] = acc[r][j];
  }
}

#if defined(__GNUC__) && !defined(__CUDACC__) && defined(__AVX512F__)
// float fast paths with GCC vector extensions (16 floats: one AVX-512 register): the accumulators are named
// vectors, so they stay in registers (GCC spills the plain array versions above). AVX-512 only: built for AVX2
// (two registers per vector, 16 of them) GCC spills these tiles and moves lanes through the stack one by one,
// and the fused attention ran ~11x slower than the plain versions, which GCC vectorises well enough there
// (2048 tokens x 4 heads, one thread, forward + backward: 295 ms vs 27 ms; AVX-512 fast paths: 10.5 ms).
#define TFMODELS_BLOCK_SPARSE_VECTORS 1
typedef float Vec16 __attribute__((vector_size(64), aligned(4)));

inline Vec16 LoadVec(const float* p) {
  Vec16 v;
  __builtin_memcpy(&v, p, sizeof(v));
  return v;
}
inline void StoreVec(float* p, Vec16 v) { __builtin_memcpy(p, &v, sizeof(v)); }

// A load into a register that GCC may not fold into its users: where one loaded vector feeds several FMAs, GCC
// otherwise re-reads it from memory in each (a memory operand), and the loads, not the FMAs, become the limit
// (Zen 4 and similar cores load one 64-byte vector per cycle).
inline Vec16 LoadReg(const float* p) {
  Vec16 v = LoadVec(p);
  asm("" : "+v"(v));  // one zmm register
  return v;
}

template <>
inline void BlockABt<float>(const float* a_block, const float* bt, int64_t dim, float* out,
                            LinePrefetcher* prefetch) {
  for (int i0 = 0; i0 < kBlock; i0 += 8) {
    Vec16 c00 = {}, c01 = {}, c10 = {}, c11 = {}, c20 = {}, c21 = {}, c30 = {}, c31 = {};
    Vec16 c40 = {}, c41 = {}, c50 = {}, c51 = {}, c60 = {}, c61 = {}, c70 = {}, c71 = {};
    const float* a = a_block + i0 * dim;
    for (int64_t d = 0; d < dim; ++d) {
      PrefetchStep(prefetch);
      const Vec16 b0 = LoadVec(bt + d * kBlock), b1 = LoadVec(bt + d * kBlock + 16);
      float v;
      v = a[d];           c00 += v * b0; c01 += v * b1;
      v = a[dim + d];     c10 += v * b0; c11 += v * b1;
      v = a[2 * dim + d]; c20 += v * b0; c21 += v * b1;
      v = a[3 * dim + d]; c30 += v * b0; c31 += v * b1;
      v = a[4 * dim + d]; c40 += v * b0; c41 += v * b1;
      v = a[5 * dim + d]; c50 += v * b0; c51 += v * b1;
      v = a[6 * dim + d]; c60 += v * b0; c61 += v * b1;
      v = a[7 * dim + d]; c70 += v * b0; c71 += v * b1;
    }
    float* o = out + i0 * kBlock;
    StoreVec(o, c00); StoreVec(o + 16, c01); StoreVec(o + 32, c10); StoreVec(o + 48, c11);
    StoreVec(o + 64, c20); StoreVec(o + 80, c21); StoreVec(o + 96, c30); StoreVec(o + 112, c31);
    StoreVec(o + 128, c40); StoreVec(o + 144, c41); StoreVec(o + 160, c50); StoreVec(o + 176, c51);
    StoreVec(o + 192, c60); StoreVec(o + 208, c61); StoreVec(o + 224, c70); StoreVec(o + 240, c71);
  }
}
#endif

// Tiles of b, transposed: bt[batch, num_blocks, dim, 32] from b[batch, num_blocks * 32, dim].
template <typename T, typename ParallelFor>
void TransposeTiles(const ParallelFor& parallel_for, const T* b, T* bt, int64_t tiles, int64_t dim) {
  parallel_for(tiles, 2 * kBlock * dim, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const T* src = b + t * kBlock * dim;
      T* dst = bt + t * kBlock * dim;
      for (int j = 0; j < kBlock; ++j)
        for (int64_t d = 0; d < dim; ++d) dst[d * kBlock + j] = src[j * dim + d];
    }
  });
}

// scratch: batch * num_col_blocks * 32 * dim values (or nullptr: allocated here).
template <typename T, typename ParallelFor>
void Sddmm(const ParallelFor& parallel_for, const T* a, const T* b, const int32_t* indices, T* out,
           int64_t batch, int64_t num_row_blocks, int64_t num_col_blocks, int64_t dim, int64_t num_slots,
           T* scratch = nullptr) {
  std::vector<T> owned;
  if (scratch == nullptr) {
    owned.resize(batch * num_col_blocks * kBlock * dim);
    scratch = owned.data();
  }
  TransposeTiles(parallel_for, b, scratch, batch * num_col_blocks, dim);
  const T* bt = scratch;
  const int64_t a_stride = num_row_blocks * kBlock * dim;
  const int64_t b_stride = num_col_blocks * kBlock * dim;
  parallel_for(batch * num_slots, 2 * kBlockArea * dim + 64, [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n) {
      const int64_t bi = n / num_slots;
      const int32_t idx = indices[n];
      T* o = out + n * kBlockArea;
      if (idx < 0 || dim == 0) {
        std::fill(o, o + kBlockArea, T(0));
        continue;
      }
      const int64_t r = idx / num_col_blocks, c = idx % num_col_blocks;
      BlockABt(a + bi * a_stride + r * kBlock * dim, bt + bi * b_stride + c * kBlock * dim, dim, o);
    }
  });
}

// ---------------------------------------------------------------------------------------------------------
// Spmm: selected blocks x dense -> dense, accumulated per output block.

// out_block[32][dim] += op(block)[32][32] x dense_block[32][dim], op = identity or transpose (a template
// parameter, so that the inner loops are branch-free and vectorise). Register-blocked: 4 output rows x 64 dims
// of accumulators, one broadcast weight per (row, source row).
template <bool kTranspose, typename T>
inline T BlockWeight(const T* block, int p, int q) {
  return kTranspose ? block[q * kBlock + p] : block[p * kBlock + q];
}

template <bool kTranspose, typename T>
inline void AccumulateBlock(const T* block, const T* dense_block, int64_t dim, T* out_block) {
  constexpr int kRows = 4;
  constexpr int64_t kChunk = 64;
  for (int p0 = 0; p0 < kBlock; p0 += kRows) {
    int64_t d0 = 0;
    for (; d0 + kChunk <= dim; d0 += kChunk) {
      T acc[kRows][kChunk];
      for (int r = 0; r < kRows; ++r)
        for (int64_t d = 0; d < kChunk; ++d) acc[r][d] = out_block[(p0 + r) * dim + d0 + d];
      for (int q = 0; q < kBlock; ++q) {
        const T* src = dense_block + q * dim + d0;
        const T w0 = BlockWeight<kTranspose>(block, p0 + 0, q), w1 = BlockWeight<kTranspose>(block, p0 + 1, q);
        const T w2 = BlockWeight<kTranspose>(block, p0 + 2, q), w3 = BlockWeight<kTranspose>(block, p0 + 3, q);
#pragma GCC ivdep
        for (int64_t d = 0; d < kChunk; ++d) {
          const T x = src[d];
          acc[0][d] += w0 * x;
          acc[1][d] += w1 * x;
          acc[2][d] += w2 * x;
          acc[3][d] += w3 * x;
        }
      }
      for (int r = 0; r < kRows; ++r)
        for (int64_t d = 0; d < kChunk; ++d) out_block[(p0 + r) * dim + d0 + d] = acc[r][d];
    }
    if (d0 < dim) {  // remaining dims (< 64)
      const int64_t width = dim - d0;
      for (int r = 0; r < kRows; ++r) {
        T* o = out_block + (p0 + r) * dim + d0;
        for (int q = 0; q < kBlock; ++q) {
          const T w = BlockWeight<kTranspose>(block, p0 + r, q);
          const T* src = dense_block + q * dim + d0;
          for (int64_t d = 0; d < width; ++d) o[d] += w * src[d];
        }
      }
    }
  }
}

#ifdef TFMODELS_BLOCK_SPARSE_VECTORS
// float fast path: 4 output rows x 64 dims of vector accumulators, one broadcast weight per (row, source row).
template <bool kTranspose>
inline void AccumulateBlockFloat(const float* block, const float* dense_block, int64_t dim, float* out_block) {
  const int64_t full = dim / 64 * 64;
  for (int p0 = 0; p0 < kBlock; p0 += 4) {
    for (int64_t d0 = 0; d0 < full; d0 += 64) {
      float* o0 = out_block + (p0 + 0) * dim + d0;
      float* o1 = out_block + (p0 + 1) * dim + d0;
      float* o2 = out_block + (p0 + 2) * dim + d0;
      float* o3 = out_block + (p0 + 3) * dim + d0;
      Vec16 a00 = LoadVec(o0), a01 = LoadVec(o0 + 16), a02 = LoadVec(o0 + 32), a03 = LoadVec(o0 + 48);
      Vec16 a10 = LoadVec(o1), a11 = LoadVec(o1 + 16), a12 = LoadVec(o1 + 32), a13 = LoadVec(o1 + 48);
      Vec16 a20 = LoadVec(o2), a21 = LoadVec(o2 + 16), a22 = LoadVec(o2 + 32), a23 = LoadVec(o2 + 48);
      Vec16 a30 = LoadVec(o3), a31 = LoadVec(o3 + 16), a32 = LoadVec(o3 + 32), a33 = LoadVec(o3 + 48);
      for (int q = 0; q < kBlock; ++q) {
        const float* src = dense_block + q * dim + d0;
        const Vec16 x0 = LoadVec(src), x1 = LoadVec(src + 16), x2 = LoadVec(src + 32), x3 = LoadVec(src + 48);
        float w;
        w = BlockWeight<kTranspose>(block, p0 + 0, q); a00 += w * x0; a01 += w * x1; a02 += w * x2; a03 += w * x3;
        w = BlockWeight<kTranspose>(block, p0 + 1, q); a10 += w * x0; a11 += w * x1; a12 += w * x2; a13 += w * x3;
        w = BlockWeight<kTranspose>(block, p0 + 2, q); a20 += w * x0; a21 += w * x1; a22 += w * x2; a23 += w * x3;
        w = BlockWeight<kTranspose>(block, p0 + 3, q); a30 += w * x0; a31 += w * x1; a32 += w * x2; a33 += w * x3;
      }
      StoreVec(o0, a00); StoreVec(o0 + 16, a01); StoreVec(o0 + 32, a02); StoreVec(o0 + 48, a03);
      StoreVec(o1, a10); StoreVec(o1 + 16, a11); StoreVec(o1 + 32, a12); StoreVec(o1 + 48, a13);
      StoreVec(o2, a20); StoreVec(o2 + 16, a21); StoreVec(o2 + 32, a22); StoreVec(o2 + 48, a23);
      StoreVec(o3, a30); StoreVec(o3 + 16, a31); StoreVec(o3 + 32, a32); StoreVec(o3 + 48, a33);
    }
    for (int r = 0; r < 4 && full < dim; ++r) {  // remaining dims (< 64)
      float* o = out_block + (p0 + r) * dim;
      for (int q = 0; q < kBlock; ++q) {
        const float w = BlockWeight<kTranspose>(block, p0 + r, q);
        const float* src = dense_block + q * dim;
        for (int64_t d = full; d < dim; ++d) o[d] += w * src[d];
      }
    }
  }
}

template <>
inline void AccumulateBlock<false, float>(const float* block, const float* dense_block, int64_t dim, float* out) {
  AccumulateBlockFloat<false>(block, dense_block, dim, out);
}
template <>
inline void AccumulateBlock<true, float>(const float* block, const float* dense_block, int64_t dim, float* out) {
  AccumulateBlockFloat<true>(block, dense_block, dim, out);
}
#endif

// transpose == false: out has num_row_blocks blocks, dense has num_col_blocks blocks.
// transpose == true:  out has num_col_blocks blocks, dense has num_row_blocks blocks.
template <typename T, typename ParallelFor>
void Spmm(const ParallelFor& parallel_for, const T* blocks, const int32_t* indices, const T* dense, T* out,
          int64_t batch, int64_t num_row_blocks, int64_t num_col_blocks, int64_t dim, int64_t num_slots,
          bool transpose) {
  const int64_t out_blocks = transpose ? num_col_blocks : num_row_blocks;
  const int64_t dense_blocks = transpose ? num_row_blocks : num_col_blocks;
  SlotGroups groups;
  GroupSlots(parallel_for, indices, batch, num_slots, num_col_blocks, out_blocks, transpose, &groups);
  const int64_t per_target = out_blocks > 0 ? (num_slots + out_blocks - 1) / out_blocks : 0;
  parallel_for(batch * out_blocks, 2 * kBlockArea * dim * std::max<int64_t>(per_target, 1) + kBlock * dim,
               [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n) {
      const int64_t bi = n / out_blocks, target = n % out_blocks;
      T* o = out + (bi * out_blocks + target) * kBlock * dim;
      std::fill(o, o + kBlock * dim, T(0));
      for (const int32_t* s = groups.begin(bi, target); s != groups.end(bi, target); ++s) {
        const int32_t idx = indices[bi * num_slots + *s];
        const int64_t source = transpose ? idx / num_col_blocks : idx % num_col_blocks;
        const T* block = blocks + (bi * num_slots + *s) * kBlockArea;
        const T* source_block = dense + (bi * dense_blocks + source) * kBlock * dim;
        if (transpose) {
          AccumulateBlock<true>(block, source_block, dim, o);
        } else {
          AccumulateBlock<false>(block, source_block, dim, o);
        }
      }
    }
  });
}

// ---------------------------------------------------------------------------------------------------------
// Row reductions over the selected blocks.

// Per row block: the selected blocks are first combined element-wise (max or sum over the slots, contiguous and
// vectorised), then each of the 32 rows is reduced once, column halves combined element-wise (16, 8, 4, 2, 1).
// The max propagates NaN (as torch.max and numpy do): `y > x ? y : x` alone keeps or drops a NaN depending on
// which side it is on, i.e. on the order of the slots and lanes.
template <bool kMax, typename T>
inline T Combine(T x, T y) {
  return kMax ? ((y > x || y != y) ? y : x) : x + y;
}

template <bool kMax, typename T>
inline void ReduceRows(const T* block, T* o) {
  for (int i = 0; i < kBlock; ++i) {
    const T* line = block + i * kBlock;
    T t[kBlock / 2];
    for (int k = 0; k < kBlock / 2; ++k) t[k] = Combine<kMax>(line[k], line[k + kBlock / 2]);
    for (int width = kBlock / 4; width >= 1; width /= 2)
      for (int k = 0; k < width; ++k) t[k] = Combine<kMax>(t[k], t[k + width]);
    o[i] = t[0];
  }
}

template <bool kMax, typename T>
inline void ReduceRowBlock(const T* blocks, const int32_t* begin, const int32_t* end, T* o) {
  if (begin == end) {
    for (int i = 0; i < kBlock; ++i) o[i] = kMax ? -std::numeric_limits<T>::infinity() : T(0);
    return;
  }
  alignas(64) T acc[kBlockArea];
  const T* first = blocks + static_cast<int64_t>(*begin) * kBlockArea;
  for (int64_t e = 0; e < kBlockArea; ++e) acc[e] = first[e];
  for (const int32_t* s = begin + 1; s != end; ++s) {
    const T* block = blocks + static_cast<int64_t>(*s) * kBlockArea;
#pragma GCC ivdep
    for (int64_t e = 0; e < kBlockArea; ++e) acc[e] = Combine<kMax>(acc[e], block[e]);
  }
  ReduceRows<kMax>(acc, o);
}

template <typename T, typename ParallelFor>
void RowReduce(const ParallelFor& parallel_for, const T* blocks, const int32_t* indices, T* out, int64_t batch,
               int64_t num_row_blocks, int64_t num_col_blocks, int64_t num_slots, bool is_max) {
  SlotGroups groups;
  GroupSlots(parallel_for, indices, batch, num_slots, num_col_blocks, num_row_blocks, false, &groups);
  const int64_t per_row = num_row_blocks > 0 ? (num_slots + num_row_blocks - 1) / num_row_blocks : 0;
  parallel_for(batch * num_row_blocks, kBlockArea * (std::max<int64_t>(per_row, 1) + 1),
               [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n) {
      const int64_t bi = n / num_row_blocks, row = n % num_row_blocks;
      const T* batch_blocks = blocks + bi * num_slots * kBlockArea;
      if (is_max) {
        ReduceRowBlock<true>(batch_blocks, groups.begin(bi, row), groups.end(bi, row), out + n * kBlock);
      } else {
        ReduceRowBlock<false>(batch_blocks, groups.begin(bi, row), groups.end(bi, row), out + n * kBlock);
      }
    }
  });
}

// ---------------------------------------------------------------------------------------------------------
// Fused attention (forward and backward).
//
// The forward keeps its per-slot 32 x 32 blocks key-major: X[j][i] with j the key position in the slot's column
// block and i the query position in its row block, i.e. the transpose of S. Why: the scores then come out of
// BlockABt with the key tile (row-major, straight from the input) as the row operand and only the row block's
// query tile transposed (once per row block, in L1), and the per-query reductions (row max, norm) and shifts are
// element-wise over lines of 32. The forward hands its A to the backward query-major (each block transposed on
// its way out), and the backward's column pass works query-major (the column's value tile transposed once).
// Every sum is formed in the same order as the plain query-major formulation (slots in index order, then source
// rows in order): the results do not depend on the layout.

// exp(x) for float, written so that loops over it vectorise (no libm call, no branches): Cephes' expf as in
// Eigen's vectorised exp (same range reduction and polynomial, about 1 ulp); below -87.3 it returns 0, and NaN
// for NaN (a NaN score must not become a zero weight; it goes through the arithmetic as the lowest value, so that
// no NaN reaches the float-to-int conversion, which would be undefined behaviour). GCC
// if-converts the selects only without -ftrapping-math, so these functions are compiled with
// -fno-trapping-math (we never rely on floating-point exception flags). double: std::exp.
#if defined(__GNUC__) && !defined(__clang__) && !defined(__CUDACC__)
#pragma GCC push_options
#pragma GCC optimize("no-trapping-math")
#endif
inline float ExpApprox(float x) {
  const float lo = -87.3365447504f, hi = 88.3762626647949f;
  const int32_t keep = -static_cast<int32_t>(x >= lo);  // all ones unless the result flushes to 0
  float xc = x >= lo ? x : lo;  // NaN too
  xc = xc > hi ? hi : xc;
  const float fx = xc * 1.44269504088896341f + 0.5f;
  int32_t n = static_cast<int32_t>(fx);
  n -= static_cast<int32_t>(static_cast<float>(n) > fx);  // floor
  const float fn = static_cast<float>(n);
  xc = xc - fn * 0.693359375f + fn * 2.12194440e-4f;
  const float z = xc * xc;
  float y = 1.9875691500e-4f;
  y = y * xc + 1.3981999507e-3f;
  y = y * xc + 8.3334519073e-3f;
  y = y * xc + 4.1665795894e-2f;
  y = y * xc + 1.6666665459e-1f;
  y = y * xc + 5.0000001201e-1f;
  y = y * z + xc + 1.0f;
  const int32_t scale_bits = (n + 127) << 23;
  float scale;
  std::memcpy(&scale, &scale_bits, sizeof(scale));
  const float result = y * scale;
  int32_t result_bits;
  std::memcpy(&result_bits, &result, sizeof(result_bits));
  result_bits &= keep;
  float flushed;
  std::memcpy(&flushed, &result_bits, sizeof(flushed));
  return x != x ? x : flushed;
}
inline double ExpApprox(double x) { return std::exp(x); }

// X[j][i] = exp(X[j][i] - m[i]) * mask[j] (mask may be nullptr: all ones), in place.
template <typename T>
void ExpShiftMask(T* x, const T* m, const T* mask) {
  for (int j = 0; j < kBlock; ++j) {
    T* line = x + j * kBlock;
    const T weight = mask != nullptr ? mask[j] : T(1);
    for (int i = 0; i < kBlock; ++i) line[i] = ExpApprox(line[i] - m[i]) * weight;
  }
}


#if defined(__GNUC__) && !defined(__clang__) && !defined(__CUDACC__)
#pragma GCC pop_options
#endif

#ifdef TFMODELS_BLOCK_SPARSE_VECTORS
// ExpApprox on 16 lanes, operation for operation (the scalar loop vectorised poorly: a quarter of the forward's
// time). Outside the no-trapping-math region on purpose: the selects are explicit here, and GCC does not inline
// across different optimize attributes (LoadVec would become a call).
inline Vec16 ExpApprox(Vec16 x) {
  // The scalar ExpApprox's arithmetic, with AVX-512's floor (vrndscaleps) and exact y * 2^n (vscalefps) in place
  // of the integer round trip, and the FMAs GCC contracts the scalar version into: bit-identical to it for
  // x <= 88.3 (the shifted scores are <= 0).
  const __m512 v = reinterpret_cast<__m512>(x);
  // Lanes kept: x >= lo, and NaN (which the arithmetic below carries through to a NaN result).
  const __mmask16 keep = _mm512_cmp_ps_mask(v, _mm512_set1_ps(-87.3365447504f), _CMP_GE_OQ) |
                         _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
  __m512 xc = _mm512_max_ps(_mm512_set1_ps(-87.3365447504f), v);  // (lo > x ? lo : x): NaN stays NaN
  xc = _mm512_min_ps(_mm512_set1_ps(88.3762626647949f), xc);
  const __m512 fx = _mm512_fmadd_ps(xc, _mm512_set1_ps(1.44269504088896341f), _mm512_set1_ps(0.5f));
  const __m512 fn = _mm512_roundscale_ps(fx, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
  xc = _mm512_fmadd_ps(fn, _mm512_set1_ps(-0.693359375f), xc);
  xc = _mm512_fmadd_ps(fn, _mm512_set1_ps(2.12194440e-4f), xc);
  const __m512 z = _mm512_mul_ps(xc, xc);
  __m512 y = _mm512_fmadd_ps(xc, _mm512_set1_ps(1.9875691500e-4f), _mm512_set1_ps(1.3981999507e-3f));
  y = _mm512_fmadd_ps(y, xc, _mm512_set1_ps(8.3334519073e-3f));
  y = _mm512_fmadd_ps(y, xc, _mm512_set1_ps(4.1665795894e-2f));
  y = _mm512_fmadd_ps(y, xc, _mm512_set1_ps(1.6666665459e-1f));
  y = _mm512_fmadd_ps(y, xc, _mm512_set1_ps(5.0000001201e-1f));
  y = _mm512_add_ps(_mm512_fmadd_ps(y, z, xc), _mm512_set1_ps(1.0f));
  return reinterpret_cast<Vec16>(_mm512_maskz_mov_ps(keep, _mm512_scalef_ps(y, fn)));
}

// An overload, not a specialisation: a specialisation would inherit the template's optimize attribute.
inline void ExpShiftMask(float* x, const float* m, const float* mask) {
  const Vec16 m0 = LoadVec(m), m1 = LoadVec(m + 16);
  for (int j = 0; j < kBlock; ++j) {
    float* line = x + j * kBlock;
    const float weight = mask != nullptr ? mask[j] : 1.0f;
    StoreVec(line, ExpApprox(LoadVec(line) - m0) * weight);
    StoreVec(line + 16, ExpApprox(LoadVec(line + 16) - m1) * weight);
  }
}

#endif

// X[j][:] *= scale * mask[j] (mask may be nullptr: all ones), in place.
template <typename T>
inline void ScaleScores(T* x, T scale, const T* mask) {
  for (int j = 0; j < kBlock; ++j) {
    T* line = x + j * kBlock;
    const T weight = mask != nullptr ? scale * mask[j] : scale;
#pragma GCC ivdep
    for (int i = 0; i < kBlock; ++i) line[i] *= weight;
  }
}

// acc[e] = Combine(acc[e], x[e]) over a whole block (max or sum over slots, element-wise).
template <bool kMax, typename T>
inline void CombineBlock(const T* x, T* acc) {
#pragma GCC ivdep
  for (int64_t e = 0; e < kBlockArea; ++e) acc[e] = Combine<kMax>(acc[e], x[e]);
}

// o[i] = max or sum over the lines j of acc[j][i], combining lines (j, j + 16), then (j, j + 8), ... (the
// pairing ReduceRows uses within a row), element-wise over i.
template <bool kMax, typename T>
inline void ReduceLines(const T* acc, T* o) {
  alignas(64) T t[kBlock / 2][kBlock];
  for (int k = 0; k < kBlock / 2; ++k)
    for (int i = 0; i < kBlock; ++i) t[k][i] = Combine<kMax>(acc[k * kBlock + i], acc[(k + kBlock / 2) * kBlock + i]);
  for (int width = kBlock / 4; width >= 1; width /= 2)
    for (int k = 0; k < width; ++k)
      for (int i = 0; i < kBlock; ++i) t[k][i] = Combine<kMax>(t[k][i], t[k + width][i]);
  for (int i = 0; i < kBlock; ++i) o[i] = t[0][i];
}

// dst[d][i] = src[i][d]: one 32-row tile [32][dim] transposed to [dim][32].
template <typename T>
inline void TransposeTile(const T* src, int64_t dim, T* dst) {
  for (int i = 0; i < kBlock; ++i)
    for (int64_t d = 0; d < dim; ++d) dst[d * kBlock + i] = src[i * dim + d];
}

#if defined(__AVX512F__) && defined(TFMODELS_BLOCK_SPARSE_VECTORS)
// dst[c][r] = src[r][c] for a 16 x 16 float block (row strides in floats): interleave pairs of rows, then
// quadruples within 128-bit lanes, then the lanes of four-row groups. About 4x faster than the scalar loop,
// which ran once per row block (twice in the backward) at about half a BlockABt's time.
inline void Transpose16x16(const float* src, int64_t src_stride, float* dst, int64_t dst_stride) {
  __m512 r[16], t[16];
  for (int i = 0; i < 16; ++i) r[i] = _mm512_loadu_ps(src + i * src_stride);
  for (int i = 0; i < 16; i += 2) {  // per lane L: t[i] = rows i, i+1 at columns 4L, 4L+1; t[i+1]: 4L+2, 4L+3
    t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 16; i += 4) {  // r[4g + k], lane L: rows 4g..4g+3 at column 4L + k
    r[i] = _mm512_shuffle_ps(t[i], t[i + 2], 0x44);
    r[i + 1] = _mm512_shuffle_ps(t[i], t[i + 2], 0xEE);
    r[i + 2] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0x44);
    r[i + 3] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
  }
  for (int k = 0; k < 4; ++k) {  // t[k]: lanes (g0.L0, g0.L2, g1.L0, g1.L2); t[4+k]: the odd lanes; t[8+k], t[12+k]: g2, g3
    t[k] = _mm512_shuffle_f32x4(r[k], r[4 + k], 0x88);
    t[4 + k] = _mm512_shuffle_f32x4(r[k], r[4 + k], 0xDD);
    t[8 + k] = _mm512_shuffle_f32x4(r[8 + k], r[12 + k], 0x88);
    t[12 + k] = _mm512_shuffle_f32x4(r[8 + k], r[12 + k], 0xDD);
  }
  for (int k = 0; k < 4; ++k) {  // column 4L + k = lane L of groups 0..3
    r[k] = _mm512_shuffle_f32x4(t[k], t[8 + k], 0x88);
    r[8 + k] = _mm512_shuffle_f32x4(t[k], t[8 + k], 0xDD);
    r[4 + k] = _mm512_shuffle_f32x4(t[4 + k], t[12 + k], 0x88);
    r[12 + k] = _mm512_shuffle_f32x4(t[4 + k], t[12 + k], 0xDD);
  }
  for (int c = 0; c < 16; ++c) _mm512_storeu_ps(dst + c * dst_stride, r[c]);
}

// An overload (preferred for float), in 16 x 16 blocks where dim allows.
inline void TransposeTile(const float* src, int64_t dim, float* dst) {
  if (dim % 16 != 0) {
    TransposeTile<float>(src, dim, dst);
    return;
  }
  for (int i0 = 0; i0 < kBlock; i0 += 16)
    for (int64_t d0 = 0; d0 < dim; d0 += 16) Transpose16x16(src + i0 * dim + d0, dim, dst + d0 * kBlock + i0, kBlock);
}
#endif

// Scores of one slot, key-major: X = scale * k_c q_r^T with masked keys scoring 0. query_t: q_r as [dim][32].
template <typename T>
inline void SlotScores(const T* key_rows, const T* query_t, int64_t dim, T scale, const T* mask, T* x,
                       LinePrefetcher* prefetch) {
  BlockABt(key_rows, query_t, dim, x, prefetch);
  ScaleScores(x, scale, mask);
}

// scale * dS of one slot, query-major, in place of p: on entry p = gO_r v_c^T and a = A; on exit
// p = A * (p + gN[i]) * scale (grad_norm_rows may be nullptr: 0), the gradient of the unscaled q k^T.
template <typename T>
inline void ScoreGradQueryMajor(const T* a, const T* grad_norm_rows, T scale, T* p) {
  for (int i = 0; i < kBlock; ++i) {
    const T g = grad_norm_rows != nullptr ? grad_norm_rows[i] : T(0);
#pragma GCC ivdep
    for (int j = 0; j < kBlock; ++j) p[i * kBlock + j] = a[i * kBlock + j] * ((p[i * kBlock + j] + g) * scale);
  }
}

// out[32][dim] = sum over t < count of op(blocks[t]) x dense[t] (each [32][dim]), op as in AccumulateBlock: the
// slots in order, each over its 32 source rows in order. Generic version: repeated AccumulateBlock.
// prefetch (may be nullptr) is stepped once per slot and source row of each group of output rows.
template <bool kTranspose, typename T>
inline void AccumulateSlots(const T* const* blocks, const T* const* dense, int64_t count, int64_t dim, T* out,
                            LinePrefetcher* prefetch = nullptr) {
  std::fill(out, out + kBlock * dim, T(0));
  for (int64_t t = 0; t < count; ++t) {
    for (int q = 0; q < 4 * kBlock; ++q) PrefetchStep(prefetch);
    AccumulateBlock<kTranspose>(blocks[t], dense[t], dim, out);
  }
}

#ifdef TFMODELS_BLOCK_SPARSE_VECTORS
// float: the same sums, with 4 output rows x 64 dims of accumulators kept in registers across all the slots, so
// that out is written once and never read (storing and reloading it per slot cost a quarter of the FMA time).
template <bool kTranspose>
inline void AccumulateSlotsFloat(const float* const* blocks, const float* const* dense, int64_t count,
                                 int64_t dim, float* out, LinePrefetcher* prefetch) {
  const int64_t full = dim / 64 * 64;
  for (int p0 = 0; p0 < kBlock; p0 += 4) {
    for (int64_t d0 = 0; d0 < full; d0 += 64) {
      Vec16 a00 = {}, a01 = {}, a02 = {}, a03 = {}, a10 = {}, a11 = {}, a12 = {}, a13 = {};
      Vec16 a20 = {}, a21 = {}, a22 = {}, a23 = {}, a30 = {}, a31 = {}, a32 = {}, a33 = {};
      for (int64_t t = 0; t < count; ++t) {
        const float* block = blocks[t];
        const float* src = dense[t] + d0;
        for (int q = 0; q < kBlock; ++q, src += dim) {
          PrefetchStep(prefetch);
          const Vec16 x0 = LoadReg(src), x1 = LoadReg(src + 16), x2 = LoadReg(src + 32), x3 = LoadReg(src + 48);
          float w;
          w = BlockWeight<kTranspose>(block, p0 + 0, q); a00 += w * x0; a01 += w * x1; a02 += w * x2; a03 += w * x3;
          w = BlockWeight<kTranspose>(block, p0 + 1, q); a10 += w * x0; a11 += w * x1; a12 += w * x2; a13 += w * x3;
          w = BlockWeight<kTranspose>(block, p0 + 2, q); a20 += w * x0; a21 += w * x1; a22 += w * x2; a23 += w * x3;
          w = BlockWeight<kTranspose>(block, p0 + 3, q); a30 += w * x0; a31 += w * x1; a32 += w * x2; a33 += w * x3;
        }
      }
      float* o0 = out + (p0 + 0) * dim + d0;
      float* o1 = out + (p0 + 1) * dim + d0;
      float* o2 = out + (p0 + 2) * dim + d0;
      float* o3 = out + (p0 + 3) * dim + d0;
      StoreVec(o0, a00); StoreVec(o0 + 16, a01); StoreVec(o0 + 32, a02); StoreVec(o0 + 48, a03);
      StoreVec(o1, a10); StoreVec(o1 + 16, a11); StoreVec(o1 + 32, a12); StoreVec(o1 + 48, a13);
      StoreVec(o2, a20); StoreVec(o2 + 16, a21); StoreVec(o2 + 32, a22); StoreVec(o2 + 48, a23);
      StoreVec(o3, a30); StoreVec(o3 + 16, a31); StoreVec(o3 + 32, a32); StoreVec(o3 + 48, a33);
    }
    for (int r = 0; r < 4 && full < dim; ++r) {  // remaining dims (< 64)
      float* o = out + (p0 + r) * dim;
      std::fill(o + full, o + dim, 0.0f);
      for (int64_t t = 0; t < count; ++t) {
        for (int q = 0; q < kBlock; ++q) {
          const float w = BlockWeight<kTranspose>(blocks[t], p0 + r, q);
          const float* src = dense[t] + q * dim;
          for (int64_t d = full; d < dim; ++d) o[d] += w * src[d];
        }
      }
    }
  }
}

template <>
inline void AccumulateSlots<false, float>(const float* const* blocks, const float* const* dense, int64_t count,
                                          int64_t dim, float* out, LinePrefetcher* prefetch) {
  AccumulateSlotsFloat<false>(blocks, dense, count, dim, out, prefetch);
}
template <>
inline void AccumulateSlots<true, float>(const float* const* blocks, const float* const* dense, int64_t count,
                                         int64_t dim, float* out, LinePrefetcher* prefetch) {
  AccumulateSlotsFloat<true>(blocks, dense, count, dim, out, prefetch);
}
#endif

// Runs fn(0, total) on the calling thread. The attention kernels group their slots with it: that is one cheap
// pass over the indices, not worth a parallel region (each region ends in a barrier, which costs most when
// another process holds one of the cores).
struct InlineFor {
  template <typename Fn>
  void operator()(int64_t total, int64_t /*cost_per_unit*/, Fn&& fn) const {
    if (total > 0) fn(0, total);
  }
};

struct AttentionShape {
  int64_t batch, num_row_blocks, num_col_blocks, dim, dim_v, num_slots;
  double scale;
};

// Forward: per row block, the key-major scores of its slots (kept in a per-thread buffer), their row max, then
// A = exp(S - m) * mask in place, norm = its row sums and out = A v over the slots. slot_weights receives each
// slot's A query-major, [batch, num_slots, 32, 32] as the primitives' blocks (zeros for unused slots): the
// backward reads them instead of recomputing the scores and their exp (a seventh of the step's block products and
// all of its exps) at the price of writing them once.
template <typename T, typename ParallelFor>
void Attention(const ParallelFor& parallel_for, const AttentionShape& sh, const T* query, const T* key,
               const T* value, const T* key_mask, const int32_t* indices, T* out, T* norm, T* row_max,
               T* slot_weights) {
  const int64_t R = sh.num_row_blocks, C = sh.num_col_blocks, D = sh.dim, E = sh.dim_v, K = sh.num_slots;
  const T scale = static_cast<T>(sh.scale);
  SlotGroups groups;
  GroupSlots(InlineFor(), indices, sh.batch, K, C, R, false, &groups);
  for (int64_t slot = 0; slot < sh.batch * K; ++slot) {  // unused slots belong to no row block: zeroed here
    if (indices[slot] < 0) std::fill_n(slot_weights + slot * kBlockArea, kBlockArea, T(0));
  }
  const int64_t per_row = R > 0 ? (K + R - 1) / R : 0;
  auto prefetch_row = [&](int64_t n, LinePrefetcher* prefetch) {  // the tiles row block n reads
    const int64_t bi = n / R;
    prefetch->Add(query + n * kBlock * D, kBlock * D * sizeof(T));
    for (const int32_t* s = groups.begin(bi, n % R); s != groups.end(bi, n % R); ++s) {
      const int64_t tile = bi * C + indices[bi * K + *s] % C;
      prefetch->Add(key + tile * kBlock * D, kBlock * D * sizeof(T));
      prefetch->Add(value + tile * kBlock * E, kBlock * E * sizeof(T));
    }
  };
  parallel_for(sh.batch * R, (2 * kBlockArea * (D + E) + 40 * kBlockArea) * std::max<int64_t>(per_row, 1),
               [&](int64_t begin, int64_t end) {
    std::vector<T> query_t(D * kBlock), scores;
    std::vector<const T*> weights, values;
    alignas(64) T acc[kBlockArea];
    LinePrefetcher prefetch;
    for (int64_t n = begin; n < end; ++n) {
      prefetch.Clear();
      if (n + 1 < end) prefetch_row(n + 1, &prefetch);
      const int64_t bi = n / R;
      const int32_t* first = groups.begin(bi, n % R);
      const int64_t count = groups.end(bi, n % R) - first;
      T* nm = norm + n * kBlock;
      T* mx = row_max + n * kBlock;
      if (count == 0) {
        std::fill(out + n * kBlock * E, out + (n + 1) * kBlock * E, T(0));
        std::fill(nm, nm + kBlock, T(0));
        std::fill(mx, mx + kBlock, -std::numeric_limits<T>::infinity());
        continue;
      }
      TransposeTile(query + n * kBlock * D, D, query_t.data());
      scores.resize(count * kBlockArea);
      weights.resize(count);
      values.resize(count);
      for (int64_t t = 0; t < count; ++t) {
        const int64_t tile = bi * C + indices[bi * K + first[t]] % C;
        T* x = scores.data() + t * kBlockArea;
        SlotScores(key + tile * kBlock * D, query_t.data(), D, scale,
                   key_mask != nullptr ? key_mask + tile * kBlock : nullptr, x, &prefetch);
        if (t == 0) {
          std::copy(x, x + kBlockArea, acc);
        } else {
          CombineBlock<true>(x, acc);
        }
        weights[t] = x;
        values[t] = value + tile * kBlock * E;
      }
      ReduceLines<true>(acc, mx);  // over all the row block's slots, before masking (as the reference)
      std::fill(acc, acc + kBlockArea, T(0));
      for (int64_t t = 0; t < count; ++t) {
        const int64_t tile = bi * C + indices[bi * K + first[t]] % C;
        T* x = scores.data() + t * kBlockArea;
        ExpShiftMask(x, mx, key_mask != nullptr ? key_mask + tile * kBlock : nullptr);
        CombineBlock<false>(x, acc);
        TransposeTile(x, kBlock, slot_weights + (bi * K + first[t]) * kBlockArea);  // query-major, for the backward
      }
      ReduceLines<false>(acc, nm);
      AccumulateSlots<true>(weights.data(), values.data(), count, E, out + n * kBlock * E, &prefetch);
    }
  });
}

// Backward of a chunk of batch elements, from the forward's weights (A per slot, query-major), in two passes that
// share scale * dS per slot through slot_blocks (scratch of batch * num_slots * 32 * 32 values, no zeroing
// needed), so that dS is computed once:
//   per column block: dS of each of its slots (query-major, from the column's value tile transposed once),
//                     d key = sum dS^T q and d value = sum A^T d out; dS stored;
//   per row block:    d query = sum dS k over its slots (read back).
// Column pass first: each slot's random reads are then its query and grad-out tiles (needed for d key and d value
// anyway) plus the key tile in the row pass, and only dS crosses between the passes.
// A masked key has A = 0, hence dS = 0: its gradients vanish as through the reference's key * mask.
// grad_norm may be nullptr.
template <typename T, typename ParallelFor>
void AttentionGradChunk(const ParallelFor& parallel_for, const AttentionShape& sh, const T* query, const T* key,
                        const T* value, const int32_t* indices, const T* weights, const T* grad_out,
                        const T* grad_norm, T* grad_query, T* grad_key, T* grad_value, T* slot_blocks) {
  const int64_t R = sh.num_row_blocks, C = sh.num_col_blocks, D = sh.dim, E = sh.dim_v, K = sh.num_slots;
  const T scale = static_cast<T>(sh.scale);
  T* const score_grads = slot_blocks;  // scale * dS, query-major, per slot
  const int64_t per_row = std::max<int64_t>(R > 0 ? (K + R - 1) / R : 0, 1);
  const int64_t per_col = std::max<int64_t>(C > 0 ? (K + C - 1) / C : 0, 1);
  {  // d key and d value, per column block (and the slots' dS)
    SlotGroups groups;
    GroupSlots(InlineFor(), indices, sh.batch, K, C, C, true, &groups);
    auto prefetch_col = [&](int64_t n, LinePrefetcher* prefetch) {  // what column block n reads and writes
      const int64_t bi = n / C;
      prefetch->Add(value + n * kBlock * E, kBlock * E * sizeof(T));
      for (const int32_t* s = groups.begin(bi, n % C); s != groups.end(bi, n % C); ++s) {
        const int64_t slot = bi * K + *s, row = bi * R + indices[slot] / C;
        prefetch->Add(weights + slot * kBlockArea, kBlockArea * sizeof(T));
        prefetch->Add(query + row * kBlock * D, kBlock * D * sizeof(T));
        prefetch->Add(grad_out + row * kBlock * E, kBlock * E * sizeof(T));
        prefetch->Add(score_grads + slot * kBlockArea, kBlockArea * sizeof(T), true);
      }
    };
    parallel_for(sh.batch * C, (3 * kBlockArea * (D + E) + 8 * kBlockArea) * per_col,
                 [&](int64_t begin, int64_t end) {
      std::vector<T> value_t(E * kBlock);
      std::vector<const T*> grads, queries, prob_blocks, grad_outs;
      LinePrefetcher prefetch;
      for (int64_t n = begin; n < end; ++n) {
        prefetch.Clear();
        if (n + 1 < end) prefetch_col(n + 1, &prefetch);
        const int64_t bi = n / C;
        const int32_t* first = groups.begin(bi, n % C);
        const int64_t count = groups.end(bi, n % C) - first;
        grads.resize(count);
        queries.resize(count);
        prob_blocks.resize(count);
        grad_outs.resize(count);
        if (count > 0) TransposeTile(value + n * kBlock * E, E, value_t.data());
        for (int64_t t = 0; t < count; ++t) {
          const int64_t slot = bi * K + first[t], row = bi * R + indices[slot] / C;
          const T* a = weights + slot * kBlockArea;
          T* ds = score_grads + slot * kBlockArea;
          BlockABt(grad_out + row * kBlock * E, value_t.data(), E, ds, &prefetch);
          ScoreGradQueryMajor(a, grad_norm != nullptr ? grad_norm + row * kBlock : nullptr, scale, ds);
          grads[t] = ds;
          queries[t] = query + row * kBlock * D;
          prob_blocks[t] = a;
          grad_outs[t] = grad_out + row * kBlock * E;
        }
        AccumulateSlots<true>(grads.data(), queries.data(), count, D, grad_key + n * kBlock * D, &prefetch);
        AccumulateSlots<true>(prob_blocks.data(), grad_outs.data(), count, E, grad_value + n * kBlock * E,
                              &prefetch);
      }
    });
  }
  {  // d query, per row block
    SlotGroups groups;
    GroupSlots(InlineFor(), indices, sh.batch, K, C, R, false, &groups);
    auto prefetch_row = [&](int64_t n, LinePrefetcher* prefetch) {  // what row block n reads
      const int64_t bi = n / R;
      for (const int32_t* s = groups.begin(bi, n % R); s != groups.end(bi, n % R); ++s) {
        const int64_t slot = bi * K + *s, tile = bi * C + indices[slot] % C;
        prefetch->Add(score_grads + slot * kBlockArea, kBlockArea * sizeof(T));
        prefetch->Add(key + tile * kBlock * D, kBlock * D * sizeof(T));
      }
    };
    parallel_for(sh.batch * R, 2 * kBlockArea * D * per_row, [&](int64_t begin, int64_t end) {
      std::vector<const T*> grads, keys;
      LinePrefetcher prefetch;
      for (int64_t n = begin; n < end; ++n) {
        prefetch.Clear();
        if (n + 1 < end) prefetch_row(n + 1, &prefetch);
        const int64_t bi = n / R;
        const int32_t* first = groups.begin(bi, n % R);
        const int64_t count = groups.end(bi, n % R) - first;
        grads.resize(count);
        keys.resize(count);
        for (int64_t t = 0; t < count; ++t) {
          const int64_t slot = bi * K + first[t], tile = bi * C + indices[slot] % C;
          grads[t] = score_grads + slot * kBlockArea;
          keys[t] = key + tile * kBlock * D;
        }
        AccumulateSlots<false>(grads.data(), keys.data(), count, D, grad_query + n * kBlock * D, &prefetch);
      }
    });
  }
}

// Batch elements per chunk of the backward. The scratch holds a chunk's slot blocks; kept to about 8 MB it is
// mostly still in cache when the column pass reads it back, and small enough for the allocator to reuse rather
// than map fresh pages on every call (at length 16384, 4 x 2048 slots would need 64 MB).
inline int64_t GradChunkSize(int64_t batch, int64_t num_slots, int64_t value_size) {
  const int64_t per_element = std::max<int64_t>(num_slots * kBlockArea * value_size, 1);
  return std::max<int64_t>(std::min<int64_t>((int64_t{8} << 20) / per_element, batch), 1);
}

// Backward: AttentionGradChunk over chunks of GradChunkSize(batch, num_slots, sizeof(T)) batch elements;
// weights: the forward's; slot_blocks: scratch of chunk * num_slots * 32 * 32 values.
template <typename T, typename ParallelFor>
void AttentionGrad(const ParallelFor& parallel_for, const AttentionShape& sh, const T* query, const T* key,
                   const T* value, const int32_t* indices, const T* weights, const T* grad_out, const T* grad_norm,
                   T* grad_query, T* grad_key, T* grad_value, T* slot_blocks) {
  const int64_t chunk = GradChunkSize(sh.batch, sh.num_slots, sizeof(T));
  const int64_t query_size = sh.num_row_blocks * kBlock, key_size = sh.num_col_blocks * kBlock;
  for (int64_t b = 0; b < sh.batch; b += chunk) {
    AttentionShape part = sh;
    part.batch = std::min(chunk, sh.batch - b);
    AttentionGradChunk(parallel_for, part, query + b * query_size * sh.dim, key + b * key_size * sh.dim,
                       value + b * key_size * sh.dim_v, indices + b * sh.num_slots,
                       weights + b * sh.num_slots * kBlockArea, grad_out + b * query_size * sh.dim_v,
                       grad_norm != nullptr ? grad_norm + b * query_size : nullptr,
                       grad_query + b * query_size * sh.dim, grad_key + b * key_size * sh.dim,
                       grad_value + b * key_size * sh.dim_v, slot_blocks);
  }
}

}  // namespace block_sparse
}  // namespace tfmodels

#endif  // TFMODELS_BLOCK_SPARSE_KERNELS_H_
