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
// Everything that accumulates is computed per output block, over the slots in index order, so results are
// deterministic and independent of the number of threads. The CPU code is parallelised through a
// `ParallelFor` callable (see common/parallel.h).
#ifndef TFMODELS_BLOCK_SPARSE_KERNELS_H_
#define TFMODELS_BLOCK_SPARSE_KERNELS_H_

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

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

// ---------------------------------------------------------------------------------------------------------
// Sddmm: dense x dense -> selected blocks.

// out[32][32] = a_block[32][dim] x b_block[32][dim]^T, with b_block given transposed: bt[dim][32].
// Register-blocked: 8 output rows x 32 columns of accumulators, one broadcast a value per (row, d).
template <typename T>
inline void BlockABt(const T* a_block, const T* bt, int64_t dim, T* out) {
  constexpr int kRows = 8;
  for (int i0 = 0; i0 < kBlock; i0 += kRows) {
    T acc[kRows][kBlock];
    for (int r = 0; r < kRows; ++r)
      for (int j = 0; j < kBlock; ++j) acc[r][j] = T(0);
    const T* a_rows = a_block + i0 * dim;
    for (int64_t d = 0; d < dim; ++d) {
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
template <bool kMax, typename T>
inline T Combine(T x, T y) {
  return kMax ? (y > x ? y : x) : x + y;
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

}  // namespace block_sparse
}  // namespace tfmodels

#endif  // TFMODELS_BLOCK_SPARSE_KERNELS_H_
