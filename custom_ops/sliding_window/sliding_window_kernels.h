// Sliding-window (banded) attention products, TF-free: templated functors on raw pointers, shared by the TF
// CPU kernels (sliding_window_ops.cc) and the CUDA test harness (harness.cu).
//
// Layout (Longformer's): query/key/value [batch, seq, heads, dim]; scores/probabilities
// [batch, seq, heads, X + 2w + 1] where the first X columns belong to X "global" keys [batch, X, heads, dim]
// and column X + j to key position i + j - w (the band, one-sided window w).
//
//   BandedScores:           s[i, c<X]   = q_i . gk_c                   (fill where global_keep[c] is false)
//                           s[i, X + j] = q_i . k_{i+j-w}              (fill out of range / key_keep false)
//   BandedApply:            o_i = sum_c p[i,c] gv_c + sum_j p[i,X+j] v_{i+j-w}   (masked entries skipped)
//   BandedApplyTransposed:  o_m = sum_j p[m+w-j, X+j] u_{m+w-j}        (zero where key_keep[m] is false)
//   GlobalApplyTransposed:  o_c = sum_i p[i,c] u_i                     (zero where global_keep[c] is false)
//
// The gradients are compositions of the four: for s = QK(q, k, gk): dq = Apply(ds, k, gk), dk =
// ApplyTransposed(ds, q), dgk = GlobalApplyTransposed(ds, q); for o = PV(p, v, gv): dp = Scores(do, v, gv,
// fill 0), dv = ApplyTransposed(p, do), dgv = GlobalApplyTransposed(p, do).
//
// CPU: work is split into (batch, head, block of kBlock query rows) units through a ParallelFor (see
// common/parallel.h). Each unit copies the keys/values its block can see into a small contiguous buffer and
// runs a register-tiled micro-kernel written for the compiler's auto-vectoriser; memory is O(seq * window).
#ifndef TFMODELS_SLIDING_WINDOW_KERNELS_H_
#define TFMODELS_SLIDING_WINDOW_KERNELS_H_

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <utility>
#include <vector>

#if defined(__CUDACC__)
#define TFMODELS_HOST_DEVICE __host__ __device__
#else
#define TFMODELS_HOST_DEVICE
#endif

namespace tfmodels {
namespace sliding_window {

struct Dims {
  int64_t batch = 0, seq = 0, heads = 0, dim = 0, num_global = 0, window = 0;
  TFMODELS_HOST_DEVICE int64_t band() const { return 2 * window + 1; }
  TFMODELS_HOST_DEVICE int64_t cols() const { return num_global + band(); }
  // Element offsets.
  TFMODELS_HOST_DEVICE int64_t row(int64_t b, int64_t i, int64_t h) const { return ((b * seq + i) * heads + h) * dim; }
  TFMODELS_HOST_DEVICE int64_t grow(int64_t b, int64_t c, int64_t h) const {
    return ((b * num_global + c) * heads + h) * dim;
  }
  TFMODELS_HOST_DEVICE int64_t srow(int64_t b, int64_t i, int64_t h) const {
    return ((b * seq + i) * heads + h) * cols();
  }
};

// Accumulation type: float for float / half / bfloat16, double for double.
template <typename T> struct AccType { using type = float; };
template <> struct AccType<double> { using type = double; };

constexpr int64_t kBlock = 64;              // query rows per work unit
constexpr int kRows = 6;                    // rows per Apply tile
constexpr int64_t kPad = kRows - 1;         // zero columns around a copied band row: the most a tile reads past it

inline int64_t RoundUp(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

// SIMD vectors of the target's register width through the GCC/Clang vector extension; the compiler keeps a tile
// of them in registers, which plain arrays do not guarantee. Vectors wider than the registers are not kept there:
// 64-byte vectors built for AVX2 went through the stack, several times slower than 32-byte ones.
#if defined(__AVX512F__)
constexpr int kVectorBytes = 64;
constexpr int kTileVectors = 4;  // 32 registers: 6 x 4 accumulators, 4 loaded vectors and a broadcast
#elif defined(__AVX__)
constexpr int kVectorBytes = 32;
constexpr int kTileVectors = 2;  // 16 registers: 6 x 2 accumulators, 2 loaded vectors and a broadcast
#else
constexpr int kVectorBytes = 16;
constexpr int kTileVectors = 2;
#endif

template <typename A> struct Vec;
template <> struct Vec<float> {
  typedef float type __attribute__((vector_size(kVectorBytes)));
  static constexpr int kLanes = kVectorBytes / 4;
};
template <> struct Vec<double> {
  typedef double type __attribute__((vector_size(kVectorBytes)));
  static constexpr int kLanes = kVectorBytes / 8;
};

template <typename A>
inline typename Vec<A>::type LoadVec(const A* p) {
  typename Vec<A>::type v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

template <typename A>
inline void StoreVec(A* p, const typename Vec<A>::type& v) {
  std::memcpy(p, &v, sizeof(v));
}

// x in every lane, as an initializer list {x, x, ...}: a broadcast (a loop setting the lanes one by one is not
// always turned into one).
template <typename A, size_t... kLane>
inline typename Vec<A>::type SplatLanes(A x, std::index_sequence<kLane...>) {
  return typename Vec<A>::type{((void)kLane, x)...};
}

template <typename A>
inline typename Vec<A>::type Splat(A x) {
  return SplatLanes<A>(x, std::make_index_sequence<Vec<A>::kLanes>());
}

// Per-thread scratch buffers, grown on demand and reused across calls.
template <typename A>
struct Scratch {
  std::vector<A> a, b;
  A* first(size_t n) { if (a.size() < n) a.resize(n); return a.data(); }
  A* second(size_t n) { if (b.size() < n) b.resize(n); return b.data(); }
};

template <typename A>
inline Scratch<A>& ThreadScratch() {
  static thread_local Scratch<A> scratch;
  return scratch;
}

// ---------------------------------------------------------------------------------------------------------
// Micro-kernels

// Score tiles: R (<= kScoreRows) query rows x NV (<= kTileVectors) vectors of key columns, accumulated in
// registers: 6 x 4 on AVX-512 is 24 FMAs per 4 key loads and 6 broadcasts.
constexpr int kScoreRows = 6;

// out[r][t] = sum_d q[r][d] * kp[d][t] for r < R and t < NV * lanes (kp row-major with stride ld).
template <typename A, int R, int NV>
inline void ScoresTile(const A* q, int64_t qld, const A* kp, int64_t ld, int64_t dim, A* out, int64_t old) {
  using V = typename Vec<A>::type;
  constexpr int L = Vec<A>::kLanes;
  V acc[R][NV];
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < NV; ++v) acc[r][v] = V{};
  for (int64_t d = 0; d < dim; ++d, kp += ld) {
    V kv[NV];
    for (int v = 0; v < NV; ++v) kv[v] = LoadVec<A>(kp + v * L);
    for (int r = 0; r < R; ++r) {
      const V qv = Splat<A>(q[r * qld + d]);
      for (int v = 0; v < NV; ++v) acc[r][v] += qv * kv[v];
    }
  }
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < NV; ++v) StoreVec<A>(out + r * old + v * L, acc[r][v]);
}

// A ScoresTile with its rows (1..kScoreRows) and vectors (1..kTileVectors) known only at run time.
template <typename A, int NV = kTileVectors>
inline void ScoresTiles(int vectors, int rows, const A* q, int64_t qld, const A* kp, int64_t ld, int64_t dim, A* out,
                        int64_t old) {
  if constexpr (NV > 1) {
    if (vectors < NV) return ScoresTiles<A, NV - 1>(vectors, rows, q, qld, kp, ld, dim, out, old);
  }
  static_assert(kScoreRows == 6, "the switch below covers 1..6 rows");
  switch (rows) {
    case 6: return ScoresTile<A, 6, NV>(q, qld, kp, ld, dim, out, old);
    case 5: return ScoresTile<A, 5, NV>(q, qld, kp, ld, dim, out, old);
    case 4: return ScoresTile<A, 4, NV>(q, qld, kp, ld, dim, out, old);
    case 3: return ScoresTile<A, 3, NV>(q, qld, kp, ld, dim, out, old);
    case 2: return ScoresTile<A, 2, NV>(q, qld, kp, ld, dim, out, old);
    default: return ScoresTile<A, 1, NV>(q, qld, kp, ld, dim, out, old);
  }
}

// acc[r][:] += sum_c coef(r, c) * v[c][d0 : d0 + kCols * lanes] with coef(r, c) = coef[r * rstride + c * cstride],
// over the columns of row r's band only: r <= c < r + band. The coefficients outside it are structural zeros,
// and skipping them (rather than adding 0 * v) keeps a NaN / Inf in one value row out of the rows whose band
// does not reach it, as the op's definition says. Only the first and last kRows - 1 columns need the check.
template <typename A, int kCols>
inline void ApplyTile(const A* coef, int64_t rstride, int64_t cstride, const A* v, int64_t ld, int64_t ncols,
                      int64_t band, int64_t d0, A* out, int64_t old) {
  using V = typename Vec<A>::type;
  constexpr int L = Vec<A>::kLanes;
  V acc[kRows][kCols];
  for (int r = 0; r < kRows; ++r)
    for (int u = 0; u < kCols; ++u) acc[r][u] = V{};
  const A* vp = v + d0;
  const A* cp = coef;
  for (int64_t c = 0; c < ncols; ++c, vp += ld, cp += cstride) {
    V vv[kCols];
    for (int u = 0; u < kCols; ++u) vv[u] = LoadVec<A>(vp + u * L);
    const bool every_row = c >= kRows - 1 && c < band;
    for (int r = 0; r < kRows; ++r) {
      if (!every_row && (c < r || c >= r + band)) continue;
      const V pv = Splat<A>(cp[r * rstride]);
      for (int u = 0; u < kCols; ++u) acc[r][u] += pv * vv[u];
    }
  }
  for (int r = 0; r < kRows; ++r)
    for (int u = 0; u < kCols; ++u) StoreVec<A>(out + r * old + d0 + u * L, acc[r][u]);
}

// out[r][:] = sum_c coef(r, c) * v[c][:] for kRows rows and all `dim` features (row r: columns r .. r + band - 1).
template <typename A>
inline void ApplyRows(const A* coef, int64_t rstride, int64_t cstride, const A* v, int64_t ld, int64_t ncols,
                      int64_t band, int64_t dim, A* out, int64_t old) {
  constexpr int L = Vec<A>::kLanes;
  int64_t d0 = 0;
  for (; d0 + kTileVectors * L <= dim; d0 += kTileVectors * L)
    ApplyTile<A, kTileVectors>(coef, rstride, cstride, v, ld, ncols, band, d0, out, old);
  for (; d0 + L <= dim; d0 += L) ApplyTile<A, 1>(coef, rstride, cstride, v, ld, ncols, band, d0, out, old);
  for (; d0 < dim; ++d0) {
    for (int r = 0; r < kRows; ++r) {
      A s = A(0);
      for (int64_t c = r; c < std::min(ncols, r + band); ++c) s += coef[r * rstride + c * cstride] * v[c * ld + d0];
      out[r * old + d0] = s;
    }
  }
}

// ---------------------------------------------------------------------------------------------------------
// BandedScores: the keys of each (batch, head) are first transposed once into panels of P = kTileVectors * lanes
// key columns: column c <-> key c - w (zero outside the sequence), panel c / P a contiguous [dim, P] block.
// Then each block of query rows takes the panels its rows can see in turn, and every row tile of the block that
// reaches a panel runs one ScoresTile over the vectors of it that the tile's band touches: the panel (16 KB at
// head size 64 on AVX-512) stays in L1 across the block's row tiles, where a row tile reading all its 2w + 6
// columns of a plain [dim, keys] transpose (74 KB at w = 128) streams them from L2.

template <typename A>
constexpr int64_t PanelColumns() {
  return kTileVectors * Vec<A>::kLanes;
}

// Panels per (batch, head): the last row's band ends at column seq - 1 + 2w.
inline int64_t ScorePanels(const Dims& d, int64_t columns) {
  return (d.seq + 2 * d.window + columns - 1) / columns;
}

// Workspace elements (of the accumulation type) BandedScores needs.
template <typename T>
int64_t BandedScoresWorkspace(const Dims& d) {
  using A = typename AccType<T>::type;
  constexpr int64_t P = PanelColumns<A>();
  return d.batch * d.heads * ScorePanels(d, P) * d.dim * P;
}

// Phase 1 of BandedScores (and of BandedAttention): the key panels of every (batch, head) into `workspace`
// (BandedScoresWorkspace elements).
template <typename T, typename ParallelFor>
void PackKeyPanels(const ParallelFor& parallel_for, const Dims& d, const T* k, typename AccType<T>::type* workspace) {
  using A = typename AccType<T>::type;
  constexpr int64_t P = PanelColumns<A>();
  const int64_t S = d.seq, D = d.dim, w = d.window;
  const int64_t panels = ScorePanels(d, P), panel_size = D * P;
  parallel_for(d.batch * d.heads * panels, P * (D + 1) * 2, [&](int64_t begin, int64_t end) {
    for (int64_t unit = begin; unit < end; ++unit) {
      const int64_t p = unit % panels, h = (unit / panels) % d.heads, b = unit / (panels * d.heads);
      A* panel = workspace + unit * panel_size;
      const T* rows[P];
      for (int64_t c = 0; c < P; ++c) {
        const int64_t m = p * P + c - w;
        rows[c] = (m >= 0 && m < S) ? k + d.row(b, m, h) : nullptr;
      }
      for (int64_t e = 0; e < D; ++e) {
        A* dst = panel + e * P;
        for (int64_t c = 0; c < P; ++c) dst[c] = rows[c] ? static_cast<A>(rows[c][e]) : A(0);
      }
    }
  });
}

// The raw scores of one block of query rows i0 .. i0 + rows - 1 of (batch b, head h), from the key panels:
// band(r)[j] is query i0 + r against key i0 + r + j - w (any value where that key is out of range), global(r)[c]
// query i0 + r against global key c (c < X).
template <typename A>
struct BlockScores {
  A* res;             // [rows, rc]: column c <-> key column first * P + c
  int64_t rc, first;  // its row stride and first panel
  A* gres;            // [rows, gw]: the global scores
  int64_t gw;
  int64_t i0;
  A* band(int64_t r) const { return res + r * rc + (i0 + r) - first * PanelColumns<A>(); }
  A* global(int64_t r) const { return gres + r * gw; }
};

template <typename T>
BlockScores<typename AccType<T>::type> ScoreBlock(const Dims& d, const typename AccType<T>::type* workspace,
                                                  const T* q, const T* gk, int64_t b, int64_t h, int64_t i0,
                                                  int64_t rows, Scratch<typename AccType<T>::type>& scratch) {
  using A = typename AccType<T>::type;
  constexpr int L = Vec<A>::kLanes;
  constexpr int64_t P = PanelColumns<A>();
  const int64_t D = d.dim, w = d.window, X = d.num_global;
  const int64_t panels = ScorePanels(d, P), panel_size = D * P;
  // Row i sees key columns [i, i + 2w]; res column c <-> key column first * P + c. The global keys are one
  // more panel, gp ([dim, gw] with zero columns past X), and their scores go to gres.
  const int64_t i1 = i0 + rows;
  const int64_t first = i0 / P, last = (i1 - 1 + 2 * w) / P, rc = (last - first + 1) * P;
  const int64_t gw = RoundUp(X, L);
  // res has room for whole groups of kRows rows and one more row, so that BandedAttention (banded_attention.h) can
  // read row groups of its band in place; the rows past `rows` are not computed.
  const int64_t res_rows = RoundUp(rows, kRows) + 1;
  A* buffer = scratch.second(static_cast<size_t>(rows * D + res_rows * rc + rows * gw + D * gw));
  A* qb = buffer;
  A* res = qb + rows * D;
  A* gres = res + res_rows * rc;
  A* gp = gres + rows * gw;
  for (int64_t r = 0; r < rows; ++r) {
    const T* src = q + d.row(b, i0 + r, h);
    for (int64_t e = 0; e < D; ++e) qb[r * D + e] = static_cast<A>(src[e]);
  }
  const A* kt = workspace + (b * d.heads + h) * panels * panel_size;
  for (int64_t p = first; p <= last; ++p) {
    for (int64_t r0 = 0; r0 < rows; r0 += kScoreRows) {
      const int tile_rows = static_cast<int>(std::min<int64_t>(kScoreRows, rows - r0));
      // The columns the tile's rows see, within this panel, widened to whole vectors.
      const int64_t lo = std::max(i0 + r0, p * P), hi = std::min(i0 + r0 + tile_rows - 1 + 2 * w, p * P + P - 1);
      if (lo > hi) continue;
      const int64_t v0 = (lo - p * P) / L, v1 = (hi - p * P) / L;
      ScoresTiles<A>(static_cast<int>(v1 - v0 + 1), tile_rows, qb + r0 * D, D, kt + p * panel_size + v0 * L, P, D,
                     res + r0 * rc + (p - first) * P + v0 * L, rc);
    }
  }
  if (X > 0) {
    for (int64_t e = 0; e < D; ++e) {
      for (int64_t c = 0; c < gw; ++c) gp[e * gw + c] = c < X ? static_cast<A>(gk[d.grow(b, c, h) + e]) : A(0);
    }
    for (int64_t c0 = 0; c0 < gw; c0 += P) {
      const int vectors = static_cast<int>(std::min<int64_t>(P, gw - c0) / L);
      for (int64_t r0 = 0; r0 < rows; r0 += kScoreRows) {
        const int tile_rows = static_cast<int>(std::min<int64_t>(kScoreRows, rows - r0));
        ScoresTiles<A>(vectors, tile_rows, qb + r0 * D, D, gp + c0, gw, D, gres + r0 * gw + c0, gw);
      }
    }
  }
  return {res, rc, first, gres, gw, i0};
}

// Row r of a BlockScores as the op defines it, in place: its band entries whose key is out of range or not kept,
// and its global entries not kept, set to `fill`.
template <typename A>
inline void MaskScoreRow(const Dims& d, const BlockScores<A>& scores, int64_t r, int64_t b, const bool* key_keep,
                         const bool* global_keep, A fill) {
  const int64_t S = d.seq, w = d.window, X = d.num_global, i = scores.i0 + r;
  A* global = scores.global(r);
  for (int64_t c = 0; c < X; ++c) {
    if (global_keep != nullptr && !global_keep[b * X + c]) global[c] = fill;
  }
  // Band j <-> key i + j - w, in range for j in [lo, hi].
  A* band = scores.band(r);
  const int64_t lo = std::max<int64_t>(0, w - i), hi = std::min<int64_t>(2 * w, S - 1 - i + w);
  std::fill(band, band + lo, fill);
  std::fill(band + std::max(hi + 1, lo), band + 2 * w + 1, fill);
  // The select below does not vectorise (GCC, bool or byte masks alike): rows whose keys are all kept, found by a
  // (vectorised) memchr for a false byte (a bool false is a zero byte), skip it.
  const bool* keep = key_keep == nullptr ? nullptr : key_keep + b * S + i - w;
  if (keep != nullptr && hi >= lo && std::memchr(keep + lo, 0, static_cast<size_t>(hi - lo + 1)) != nullptr) {
    for (int64_t j = lo; j <= hi; ++j) band[j] = keep[j] ? band[j] : fill;
  }
}

template <typename T, typename ParallelFor>
void BandedScores(const ParallelFor& parallel_for, const Dims& d, const T* q, const T* k, const T* gk,
                  const bool* key_keep, const bool* global_keep, T fill, T* out,
                  typename AccType<T>::type* workspace = nullptr) {
  using A = typename AccType<T>::type;
  const int64_t S = d.seq, D = d.dim, X = d.num_global;
  if (S == 0 || d.batch == 0 || d.heads == 0) return;
  std::vector<A> own;
  if (workspace == nullptr) {
    own.resize(static_cast<size_t>(BandedScoresWorkspace<T>(d)));
    workspace = own.data();
  }
  PackKeyPanels<T>(parallel_for, d, k, workspace);
  const int64_t blocks = (S + kBlock - 1) / kBlock;
  const int64_t units = d.batch * d.heads * blocks;
  const int64_t cost = kBlock * (d.band() + X) * (D + 2) * 2;
  parallel_for(units, cost, [&](int64_t begin, int64_t end) {
    Scratch<A>& scratch = ThreadScratch<A>();
    for (int64_t unit = begin; unit < end; ++unit) {
      const int64_t blk = unit % blocks, h = (unit / blocks) % d.heads, b = unit / (blocks * d.heads);
      const int64_t i0 = blk * kBlock, rows = std::min(S, i0 + kBlock) - i0;
      const BlockScores<A> scores = ScoreBlock<T>(d, workspace, q, gk, b, h, i0, rows, scratch);
      for (int64_t r = 0; r < rows; ++r) {
        MaskScoreRow<A>(d, scores, r, b, key_keep, global_keep, static_cast<A>(fill));
        T* __restrict__ dst = out + d.srow(b, i0 + r, h);
        const A* __restrict__ global = scores.global(r);
        const A* __restrict__ band = scores.band(r);
        for (int64_t c = 0; c < X; ++c) dst[c] = static_cast<T>(global[c]);
        for (int64_t j = 0; j < d.band(); ++j) dst[X + j] = static_cast<T>(band[j]);
      }
    }
  });
}

// ---------------------------------------------------------------------------------------------------------
// BandedApply / BandedApplyTransposed: per unit, the value rows the block can see are copied into vb
// (row c <-> position i0 - w + c; zero outside the sequence and, with key_keep, for keys not kept), then each
// group of kRows output rows runs ApplyRows over the coefficients of its 2w + kRows columns.

template <typename T, typename A>
inline void CopyRows(const Dims& d, const T* src, int64_t b, int64_t h, int64_t first_pos, int64_t count,
                     const bool* keep, A* dst) {
  const int64_t D = d.dim;
  for (int64_t c = 0; c < count; ++c) {
    const int64_t m = first_pos + c;
    A* row = dst + c * D;
    if (m < 0 || m >= d.seq || (keep != nullptr && !keep[b * d.seq + m])) {
      std::fill(row, row + D, A(0));
      continue;
    }
    const T* s = src + d.row(b, m, h);
    for (int64_t e = 0; e < D; ++e) row[e] = static_cast<A>(s[e]);
  }
}

// o_i = sum_c p[i, c] gv_c + sum_j p[i, X + j] v_{i+j-w}: entries whose key is out of range, or not kept
// (key_keep / global_keep false), are skipped.
template <typename T, typename ParallelFor>
void BandedApply(const ParallelFor& parallel_for, const Dims& d, const T* p, const T* v, const T* gv,
                 const bool* key_keep, const bool* global_keep, T* out) {
  using A = typename AccType<T>::type;
  const int64_t S = d.seq, D = d.dim, w = d.window, X = d.num_global;
  if (S == 0 || d.batch == 0 || d.heads == 0 || D == 0) return;
  const int64_t blocks = (S + kBlock - 1) / kBlock;
  const int64_t units = d.batch * d.heads * blocks;
  const int64_t cost = kBlock * (d.band() + X) * (D + 2) * 2;
  parallel_for(units, cost, [&](int64_t begin, int64_t end) {
    Scratch<A>& scratch = ThreadScratch<A>();
    for (int64_t unit = begin; unit < end; ++unit) {
      const int64_t blk = unit % blocks, h = (unit / blocks) % d.heads, b = unit / (blocks * d.heads);
      const int64_t i0 = blk * kBlock, i1 = std::min(S, i0 + kBlock), rows = i1 - i0;
      const int64_t ncols = kRows + 2 * w;                     // columns of a row group
      const int64_t vrows = RoundUp(rows, kRows) - kRows + ncols;
      A* vb = scratch.first(static_cast<size_t>(vrows * D));
      CopyRows<T, A>(d, v, b, h, i0 - w, vrows, key_keep, vb);
      A* buffer = scratch.second(static_cast<size_t>(kRows * ncols + kRows * D));
      A* coef = buffer;                 // coef[r][c] multiplies vb row r0 + c for output row r0 + r
      A* acc = buffer + kRows * ncols;
      for (int64_t r0 = 0; r0 < rows; r0 += kRows) {
        std::fill(coef, coef + kRows * ncols, A(0));
        for (int r = 0; r < kRows && r0 + r < rows; ++r) {
          const T* src = p + d.srow(b, i0 + r0 + r, h) + X;
          A* row = coef + r * ncols + r;
          for (int64_t j = 0; j < 2 * w + 1; ++j) row[j] = static_cast<A>(src[j]);
        }
        ApplyRows<A>(coef, ncols, 1, vb + r0 * D, D, ncols, 2 * w + 1, D, acc, D);
        for (int r = 0; r < kRows && r0 + r < rows; ++r) {
          const int64_t i = i0 + r0 + r;
          A* a = acc + r * D;
          const T* src = p + d.srow(b, i, h);
          for (int64_t c = 0; c < X; ++c) {
            if (global_keep != nullptr && !global_keep[b * X + c]) continue;
            const A pc = static_cast<A>(src[c]);
            const T* g = gv + d.grow(b, c, h);
            for (int64_t e = 0; e < D; ++e) a[e] += pc * static_cast<A>(g[e]);
          }
          T* dst = out + d.row(b, i, h);
          for (int64_t e = 0; e < D; ++e) dst[e] = static_cast<T>(a[e]);
        }
      }
    }
  });
}

// o_m = sum_j p[m + w - j, X + j] u_{m+w-j}, zero where key_keep[m] is false.
template <typename T, typename ParallelFor>
void BandedApplyTransposed(const ParallelFor& parallel_for, const Dims& d, const T* p, const T* u,
                           const bool* key_keep, T* out) {
  using A = typename AccType<T>::type;
  const int64_t S = d.seq, D = d.dim, w = d.window, X = d.num_global, band = d.band();
  if (S == 0 || d.batch == 0 || d.heads == 0 || D == 0) return;
  const int64_t blocks = (S + kBlock - 1) / kBlock;
  const int64_t units = d.batch * d.heads * blocks;
  const int64_t cost = kBlock * band * (D + 2) * 2;
  parallel_for(units, cost, [&](int64_t begin, int64_t end) {
    Scratch<A>& scratch = ThreadScratch<A>();
    for (int64_t unit = begin; unit < end; ++unit) {
      const int64_t blk = unit % blocks, h = (unit / blocks) % d.heads, b = unit / (blocks * d.heads);
      const int64_t m0 = blk * kBlock, m1 = std::min(S, m0 + kBlock), rows = m1 - m0;
      const int64_t ncols = kRows + 2 * w;
      const int64_t urows = RoundUp(rows, kRows) - kRows + ncols;  // input rows n = m0 - w + c
      // Input row c contributes p[n, X + (m - n + w)] to output row m = m0 + r, i.e. band column
      // r - c + 2w of row n: with pw-wide zero-padded copies of the band rows, output rows r0 + r (r < kRows) read
      // pb[c][kPad + r0 - c + 2w + r], a fixed stride of pw - 1 per input row.
      const int64_t pw = band + 2 * kPad;
      A* buffer = scratch.first(static_cast<size_t>(urows * D + urows * pw));
      A* ub = buffer;
      A* pb = buffer + urows * D;
      CopyRows<T, A>(d, u, b, h, m0 - w, urows, nullptr, ub);
      for (int64_t c = 0; c < urows; ++c) {
        const int64_t n = m0 - w + c;
        A* row = pb + c * pw;
        std::fill(row, row + kPad, A(0));
        std::fill(row + kPad + band, row + pw, A(0));
        if (n < 0 || n >= S) {
          std::fill(row + kPad, row + kPad + band, A(0));
          continue;
        }
        const T* src = p + d.srow(b, n, h) + X;
        for (int64_t j = 0; j < band; ++j) row[kPad + j] = static_cast<A>(src[j]);
      }
      A* acc = scratch.second(static_cast<size_t>(kRows * D));
      for (int64_t r0 = 0; r0 < rows; r0 += kRows) {
        const A* coef = pb + r0 * pw + kPad + 2 * w;  // coef(r, c) = pb[r0 + c][kPad + 2w - c + r]
        ApplyRows<A>(coef, 1, pw - 1, ub + r0 * D, D, ncols, band, D, acc, D);
        for (int r = 0; r < kRows && r0 + r < rows; ++r) {
          const int64_t m = m0 + r0 + r;
          T* dst = out + d.row(b, m, h);
          const bool kept = key_keep == nullptr || key_keep[b * S + m];
          for (int64_t e = 0; e < D; ++e) dst[e] = kept ? static_cast<T>(acc[r * D + e]) : T(0.0f);
        }
      }
    }
  });
}

// o[b, c, h] = sum_i p[b, i, h, c] u[b, i, h]  (zero where global_keep is false)
template <typename T, typename ParallelFor>
void GlobalApplyTransposed(const ParallelFor& parallel_for, const Dims& d, const T* p, const T* u,
                           const bool* global_keep, T* out) {
  using A = typename AccType<T>::type;
  const int64_t S = d.seq, D = d.dim, X = d.num_global;
  const int64_t units = d.batch * X * d.heads;
  if (units == 0 || D == 0) return;
  parallel_for(units, S * (D + 1) * 2, [&](int64_t begin, int64_t end) {
    Scratch<A>& scratch = ThreadScratch<A>();
    A* acc = scratch.first(static_cast<size_t>(D));
    for (int64_t unit = begin; unit < end; ++unit) {
      const int64_t h = unit % d.heads, c = (unit / d.heads) % X, b = unit / (d.heads * X);
      std::fill(acc, acc + D, A(0));
      if (global_keep == nullptr || global_keep[b * X + c]) {
        for (int64_t i = 0; i < S; ++i) {
          const A pc = static_cast<A>(p[d.srow(b, i, h) + c]);
          const T* src = u + d.row(b, i, h);
          for (int64_t e = 0; e < D; ++e) acc[e] += pc * static_cast<A>(src[e]);
        }
      }
      T* dst = out + d.grow(b, c, h);
      for (int64_t e = 0; e < D; ++e) dst[e] = static_cast<T>(acc[e]);
    }
  });
}

}  // namespace sliding_window
}  // namespace tfmodels

#endif  // TFMODELS_SLIDING_WINDOW_KERNELS_H_
