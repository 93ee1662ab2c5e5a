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

// out[32][32] = a_block[32][dim] x b_block[32][dim]^T; bt is scratch of dim * 32.
template <typename T>
inline void BlockABt(const T* a_block, const T* b_block, int64_t dim, T* bt, T* out) {
  for (int j = 0; j < kBlock; ++j) {
    const T* row = b_block + j * dim;
    for (int64_t d = 0; d < dim; ++d) bt[d * kBlock + j] = row[d];
  }
  constexpr int kRows = 4;
  for (int i0 = 0; i0 < kBlock; i0 += kRows) {
    T acc[kRows][kBlock];
    for (int r = 0; r < kRows; ++r)
      for (int j = 0; j < kBlock; ++j) acc[r][j] = T(0);
    const T* a0 = a_block + (i0 + 0) * dim;
    const T* a1 = a_block + (i0 + 1) * dim;
    const T* a2 = a_block + (i0 + 2) * dim;
    const T* a3 = a_block + (i0 + 3) * dim;
    for (int64_t d = 0; d < dim; ++d) {
      const T* brow = bt + d * kBlock;
      const T v0 = a0[d], v1 = a1[d], v2 = a2[d], v3 = a3[d];
#pragma GCC ivdep
      for (int j = 0; j < kBlock; ++j) {
        const T bv = brow[j];
        acc[0][j] += v0 * bv;
        acc[1][j] += v1 * bv;
        acc[2][j] += v2 * bv;
        acc[3][j] += v3 * bv;
      }
    }
    for (int r = 0; r < kRows; ++r)
      for (int j = 0; j < kBlock; ++j) out[(i0 + r) * kBlock + j] = acc[r][j];
  }
}

template <typename T, typename ParallelFor>
void Sddmm(const ParallelFor& parallel_for, const T* a, const T* b, const int32_t* indices, T* out,
           int64_t batch, int64_t num_row_blocks, int64_t num_col_blocks, int64_t dim, int64_t num_slots) {
  const int64_t a_stride = num_row_blocks * kBlock * dim;
  const int64_t b_stride = num_col_blocks * kBlock * dim;
  parallel_for(batch * num_slots, 2 * kBlockArea * dim + 64, [&](int64_t begin, int64_t end) {
    std::vector<T> scratch(dim * kBlock);
    for (int64_t n = begin; n < end; ++n) {
      const int64_t bi = n / num_slots;
      const int32_t idx = indices[n];
      T* o = out + n * kBlockArea;
      if (idx < 0 || dim == 0) {
        std::fill(o, o + kBlockArea, T(0));
        continue;
      }
      const int64_t r = idx / num_col_blocks, c = idx % num_col_blocks;
      BlockABt(a + bi * a_stride + r * kBlock * dim, b + bi * b_stride + c * kBlock * dim, dim, scratch.data(), o);
    }
  });
}

// ---------------------------------------------------------------------------------------------------------
// Spmm: selected blocks x dense -> dense, accumulated per output block.

// out_block[32][dim] += op(block)[32][32] x dense_block[32][dim], op = identity or transpose.
template <typename T>
inline void AccumulateBlock(const T* block, bool transpose, const T* dense_block, int64_t dim, T* out_block) {
  constexpr int64_t kChunk = 64;
  for (int p = 0; p < kBlock; ++p) {  // output position within the block
    T* o = out_block + p * dim;
    for (int64_t d0 = 0; d0 < dim; d0 += kChunk) {
      const int64_t width = std::min(kChunk, dim - d0);
      T acc[kChunk];
      for (int64_t d = 0; d < width; ++d) acc[d] = o[d0 + d];
      if (width == kChunk) {
        for (int q = 0; q < kBlock; ++q) {
          const T w = transpose ? block[q * kBlock + p] : block[p * kBlock + q];
          const T* src = dense_block + q * dim + d0;
#pragma GCC ivdep
          for (int64_t d = 0; d < kChunk; ++d) acc[d] += w * src[d];
        }
      } else {
        for (int q = 0; q < kBlock; ++q) {
          const T w = transpose ? block[q * kBlock + p] : block[p * kBlock + q];
          const T* src = dense_block + q * dim + d0;
          for (int64_t d = 0; d < width; ++d) acc[d] += w * src[d];
        }
      }
      for (int64_t d = 0; d < width; ++d) o[d0 + d] = acc[d];
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
        AccumulateBlock(blocks + (bi * num_slots + *s) * kBlockArea, transpose,
                        dense + (bi * dense_blocks + source) * kBlock * dim, dim, o);
      }
    }
  });
}

// ---------------------------------------------------------------------------------------------------------
// Row reductions over the selected blocks.

template <typename T, typename ParallelFor>
void RowReduce(const ParallelFor& parallel_for, const T* blocks, const int32_t* indices, T* out, int64_t batch,
               int64_t num_row_blocks, int64_t num_col_blocks, int64_t num_slots, bool is_max) {
  SlotGroups groups;
  GroupSlots(parallel_for, indices, batch, num_slots, num_col_blocks, num_row_blocks, false, &groups);
  const int64_t per_row = num_row_blocks > 0 ? (num_slots + num_row_blocks - 1) / num_row_blocks : 0;
  parallel_for(batch * num_row_blocks, kBlockArea * std::max<int64_t>(per_row, 1) + kBlock,
               [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n) {
      const int64_t bi = n / num_row_blocks, row = n % num_row_blocks;
      T* o = out + n * kBlock;
      const T init = is_max ? -std::numeric_limits<T>::infinity() : T(0);
      for (int i = 0; i < kBlock; ++i) o[i] = init;
      for (const int32_t* s = groups.begin(bi, row); s != groups.end(bi, row); ++s) {
        const T* block = blocks + (bi * num_slots + *s) * kBlockArea;
        for (int i = 0; i < kBlock; ++i) {
          const T* line = block + i * kBlock;
          if (is_max) {
            T m = line[0];
            for (int j = 1; j < kBlock; ++j) m = line[j] > m ? line[j] : m;
            o[i] = m > o[i] ? m : o[i];
          } else {
            T total = T(0);
            for (int j = 0; j < kBlock; ++j) total += line[j];
            o[i] += total;
          }
        }
      }
    }
  });
}

}  // namespace block_sparse
}  // namespace tfmodels

#endif  // TFMODELS_BLOCK_SPARSE_KERNELS_H_
