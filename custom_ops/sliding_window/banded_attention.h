// Longformer's local attention as one pass over each block of query rows (CPU only, TF-free):
//
//   o_i = sum over the entries of row i of softmax(SlidingWindowQK(q, k, ...))[i, c] * (its value row)
//
// the composition of SlidingWindowQK, a softmax over the last axis and SlidingWindowPV (sliding_window_kernels.h:
// the same entries are masked, with the same fill), except that the rows of the positions not kept (key_keep
// false) are zero: in Longformer those are the global tokens, whose rows come from the global attention, and the
// padding, which is zero. Writing them here spares the caller a pass over the whole output to clear them. (Every
// all-masked row is such a row: a row's own key is in its band.)
//
// Why: the three-op path writes the [batch, seq, heads, X + 2w + 1] scores to memory, reads them back for the
// softmax (and TF's selects around it) and again for the values: at Longformer's 4096 tokens and w = 128 that is
// ~4 MB per layer three times over, and the two products ran at half the sgemm rate on a 2-core EPYC. Here one
// block of 64 query rows of one head goes from its scores (ScoreBlock) through the softmax to its output rows
// (ApplyRows reading the probabilities where the scores were) while they are in L1/L2.
#ifndef TFMODELS_SLIDING_WINDOW_BANDED_ATTENTION_H_
#define TFMODELS_SLIDING_WINDOW_BANDED_ATTENTION_H_

#include <algorithm>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

#include "common/simd.h"
#include "sliding_window/sliding_window_kernels.h"

namespace tfmodels {
namespace sliding_window {

// T: float or bfloat16 (accumulated in float). workspace: BandedScoresWorkspace<T>(d) floats, for the key panels.
template <typename T, typename ParallelFor>
void BandedAttention(const ParallelFor& parallel_for, const Dims& d, const T* q, const T* k, const T* v,
                     const T* gk, const T* gv, const bool* key_keep, const bool* global_keep, float* workspace,
                     T* out) {
  static_assert(std::is_same_v<typename AccType<T>::type, float>, "the softmax is float32 (common/simd.h)");
  const int64_t S = d.seq, D = d.dim, w = d.window, X = d.num_global, band = d.band();
  if (S == 0 || d.batch == 0 || d.heads == 0 || D == 0) return;
  PackKeyPanels<T>(parallel_for, d, k, workspace);
  // The fill of masked entries: the lowest value of T, as SlidingWindowQK writes it (then read as float).
  const float fill = static_cast<float>(std::numeric_limits<T>::lowest());
  const int64_t blocks = (S + kBlock - 1) / kBlock;
  const int64_t units = d.batch * d.heads * blocks;
  const int64_t cost = kBlock * d.cols() * (D + 4) * 4;
  parallel_for(units, cost, [&](int64_t begin, int64_t end) {
    Scratch<float>& scratch = ThreadScratch<float>();
    std::vector<float> acc(static_cast<size_t>(kRows * D)), inverse_sums(static_cast<size_t>(kBlock));
    for (int64_t unit = begin; unit < end; ++unit) {
      const int64_t blk = unit % blocks, h = (unit / blocks) % d.heads, b = unit / (blocks * d.heads);
      const int64_t i0 = blk * kBlock, rows = std::min(S, i0 + kBlock) - i0;
      const BlockScores<float> scores = ScoreBlock<T>(d, workspace, q, gk, b, h, i0, rows, scratch);
      // The softmax of each row in place, unnormalised (the output row is scaled by 1 / the sum, once per value
      // rather than once per entry, as the dense attention does): its band (contiguous in res, one element further
      // right per row) and its global scores, masked entries set to the fill first (exp 0, or 1 each in an
      // all-masked row).
      for (int64_t r = 0; r < RoundUp(rows, kRows); ++r) {
        float* row = scores.band(r);
        if (r >= rows) {  // the rows that complete the last group of kRows: weight 0, never written out
          std::fill(row, row + band, 0.0f);
          continue;
        }
        MaskScoreRow<float>(d, scores, r, b, key_keep, global_keep, fill);
        float* global = scores.global(r);
        const float max = std::fmax(simd::MaxOf(row, band), simd::MaxOf(global, X));
        inverse_sums[r] =
            1.0f / (simd::ExponentiateShifted(row, band, max) + simd::ExponentiateShifted(global, X, max));
      }
      // The values of every entry, as SlidingWindowPV (no key_keep / global_keep there: masked entries weigh 0).
      // Row r0 + r of a group reads value row r0 + c (position i0 - w + r0 + c) with coefficient
      // band(r0 + r)[c - r] = res[r0 * (rc + 1) + offset + r * rc + c]: ApplyRows reads the band in place.
      const int64_t ncols = kRows + 2 * w;
      const int64_t vrows = RoundUp(rows, kRows) - kRows + ncols;
      // Float32 values whose rows are all in the sequence are read in place (rows heads * D apart); the others
      // (bfloat16, or rows past either end, which must read as zeros) are copied to float32 rows first.
      const float* vb;
      int64_t v_stride = D;
      if (std::is_same_v<T, float> && i0 - w >= 0 && i0 - w + vrows <= S) {
        vb = reinterpret_cast<const float*>(v) + d.row(b, i0 - w, h);
        v_stride = d.heads * D;
      } else {
        float* copy = scratch.first(static_cast<size_t>(vrows * D));
        CopyRows<T, float>(d, v, b, h, i0 - w, vrows, nullptr, copy);
        vb = copy;
      }
      for (int64_t r0 = 0; r0 < rows; r0 += kRows) {
        ApplyRows<float>(scores.band(r0), scores.rc, 1, vb + r0 * v_stride, v_stride, ncols, band, D, acc.data(), D);
        for (int r = 0; r < kRows && r0 + r < rows; ++r) {
          float* a = acc.data() + r * D;
          const float* global = scores.global(r0 + r);
          for (int64_t c = 0; c < X; ++c) {
            const T* g = gv + d.grow(b, c, h);
            for (int64_t e = 0; e < D; ++e) a[e] += global[c] * static_cast<float>(g[e]);
          }
          T* dst = out + d.row(b, i0 + r0 + r, h);
          if (!key_keep[b * S + i0 + r0 + r]) {  // a row not kept (a global token or padding) is zero
            std::fill(dst, dst + D, static_cast<T>(0.0f));
            continue;
          }
          const float inverse_sum = inverse_sums[r0 + r];
          for (int64_t e = 0; e < D; ++e) dst[e] = static_cast<T>(a[e] * inverse_sum);
        }
      }
    }
  });
}

}  // namespace sliding_window
}  // namespace tfmodels

#endif  // TFMODELS_SLIDING_WINDOW_BANDED_ATTENTION_H_
