// TF-free CPU kernels of the LSH op family (YOSO): fast_hash, lsh_cumulation, lsh_weighted_cumulation.
//
// Semantics (the YOSO reference kernels, mlpen/YOSO fast_lsh_cumulation*.cu, without their restrictions):
//
// fast_hash(vectors [B,N,D], mask [B,N], projections [B,3,num_part,P]) -> codes [B,N,num_hash] (int32)
//   Each vector is zero-padded to P (a power of two, P >= D, P >= code_len) and, for every part p,
//   transformed as  x -> H(D2 * H(D1 * H(D0 * x)))  with H the unnormalised Walsh-Hadamard transform (butterflies
//   of stride P/2 down to 1: (a, b) -> (a + b, a - b)) and Dk = projections[b, k, p] (random signs). The signs of
//   the first (P / code_len) * code_len outputs give P / code_len hash codes of code_len bits (bit i of code j is
//   output[j * code_len + i] > 0); the codes of all parts, in order, truncated to num_hash, are the result.
//   Masked vectors (mask == 0) get code 0. Every float operation is an IEEE add, subtract or multiply in a fixed
//   order, so the pure-TF twin and the CUDA kernel produce bit-identical codes.
//
// lsh_cumulation(query_mask, query_code [B,Nq,H], key_mask, key_code [B,Nk,H], value [B,Nk,D], capacity C)
//   out[b,q] = query_mask[b,q] / H * sum_h sum_{k: key_mask[b,k], key_code[b,k,h] == query_code[b,q,h]} value[b,k]
//
// lsh_weighted_cumulation(... query_weight [B,Nq,W], ... key_weight [B,Nk,W], value [B,Nk,D], capacity C)
//   out[b,q] = query_mask[b,q] / H * sum_h sum_{k colliding in hash h} <query_weight[b,q], key_weight[b,k]> value[b,k]
//
// Any N, D, W, num_hash and code length are allowed (no multiples of 8 or 32). Codes must lie in [0, C); the TF
// wrappers check that before calling. The kernels are parallelised through a ParallelFor (common/parallel.h).
#ifndef TFMODELS_LSH_LSH_KERNELS_H_
#define TFMODELS_LSH_LSH_KERNELS_H_

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <utility>
#include <vector>

namespace tfmodels {
namespace lsh {

// Vectors hashed together by one CPU work item, laid out "structure of arrays" so that every butterfly of the
// Walsh-Hadamard transform is one SIMD operation over kLanes vectors.
constexpr int kLanes = 16;
// Upper bound on the scratch hash tables of lsh_cumulation (bytes); more hash functions are processed in chunks.
constexpr int64_t kTableBudgetBytes = int64_t{64} << 20;

// The GPU kernels use one thread per element of the padded vector: P <= 1024 (a block's thread limit).
constexpr int64_t kMaxGpuPaddedDim = 1024;

inline bool IsPowerOfTwo(int64_t x) { return x > 0 && (x & (x - 1)) == 0; }

inline int64_t HashesPerPart(int64_t padded_dim, int64_t code_len) { return padded_dim / code_len; }

inline int64_t NumParts(int64_t num_hash, int64_t padded_dim, int64_t code_len) {
  const int64_t per_part = HashesPerPart(padded_dim, code_len);
  if (per_part <= 0) return 0;
  return std::max<int64_t>(1, (num_hash + per_part - 1) / per_part);
}

struct FastHashArgs {
  const float* vectors;      // [B, N, D]
  const int32_t* mask;       // [B, N]
  const float* projections;  // [B, 3, num_part, P]
  int32_t* codes;            // [B, N, num_hash]
  int64_t batch, num_vectors, dim, padded_dim, num_part, num_hash, code_len;
};

#if defined(__GNUC__) && !defined(__CUDACC__) && defined(__AVX512F__)
// A row of the transform's buffer (kLanes = 16 floats: one AVX-512 register) as a GCC vector: named vectors stay
// in registers, where GCC spills a plain float[rows][kLanes] array and moves its lanes through the stack (3x
// slower than stage by stage). AVX-512 only: built for AVX2 (as 8-float vectors too) GCC spilled these and the
// hash ran 2x slower than stage by stage, which it vectorises well enough there.
typedef float LaneVec __attribute__((vector_size(kLanes * sizeof(float)), aligned(4), may_alias));

// kStages consecutive butterfly stages of the unnormalised Walsh-Hadamard transform (strides
// smallest_stride << (kStages - 1) down to smallest_stride) on kLanes vectors stored as buf[d * kLanes + lane],
// from src to dst (which may be the same buffer), row d multiplied by diag[d] on the way in (diag may be
// nullptr). The 2^kStages rows a group of butterflies shares are loaded and stored once: stage by stage the
// transform loads and stores every row in every stage, and the stores, not the additions, were its limit.
// Every output is the same IEEE operation on the same operands as stage by stage (the stages keep their order).
template <int kStages>
inline void ButterflyPass(const float* src, float* dst, const float* diag, int64_t padded_dim,
                          int64_t smallest_stride) {
  constexpr int kRows = 1 << kStages;
  const int64_t t = smallest_stride;
  for (int64_t start = 0; start < padded_dim; start += t * kRows) {
    for (int64_t o = start * kLanes; o < (start + t) * kLanes; o += kLanes) {  // row o / kLanes and its partners
      LaneVec x[kRows];
#pragma GCC unroll 8
      for (int m = 0; m < kRows; ++m) {
        x[m] = *reinterpret_cast<const LaneVec*>(src + o + m * t * kLanes);
        if (diag != nullptr) x[m] = x[m] * diag[o / kLanes + m * t];
      }
#pragma GCC unroll 3
      for (int bit = kStages - 1; bit >= 0; --bit) {
#pragma GCC unroll 8
        for (int m = 0; m < kRows; ++m) {
          if ((m >> bit) & 1) continue;
          const LaneVec sum = x[m] + x[m + (1 << bit)], difference = x[m] - x[m + (1 << bit)];
          x[m] = sum;
          x[m + (1 << bit)] = difference;
        }
      }
#pragma GCC unroll 8
      for (int m = 0; m < kRows; ++m) *reinterpret_cast<LaneVec*>(dst + o + m * t * kLanes) = x[m];
    }
  }
}

// dst = H(diag * src) for kLanes vectors (layout as above; H: butterflies of stride P/2 down to 1), three
// stages per pass (eight rows: eight registers).
inline void ScaledHadamardLanes(const float* src, float* dst, const float* diag, int64_t padded_dim) {
  int64_t stride = padded_dim / 2;
  while (stride >= 1) {
    if (stride >= 4) {
      ButterflyPass<3>(src, dst, diag, padded_dim, stride / 4);
      stride /= 8;
    } else if (stride >= 2) {
      ButterflyPass<2>(src, dst, diag, padded_dim, stride / 2);
      stride /= 4;
    } else {
      ButterflyPass<1>(src, dst, diag, padded_dim, 1);
      stride = 0;
    }
    src = dst;
    diag = nullptr;
  }
}
#else
// The same transform stage by stage (AVX2 and older, and device-side compilers: the CUDA kernels have their own).
inline void ScaledHadamardLanes(const float* src, float* dst, const float* diag, int64_t padded_dim) {
  for (int64_t d = 0; d < padded_dim; ++d) {
    for (int l = 0; l < kLanes; ++l) dst[d * kLanes + l] = src[d * kLanes + l] * diag[d];
  }
  for (int64_t stride = padded_dim / 2; stride >= 1; stride /= 2) {
    for (int64_t start = 0; start < padded_dim; start += 2 * stride) {
      for (int64_t j = start; j < start + stride; ++j) {
        for (int l = 0; l < kLanes; ++l) {
          const float a = dst[j * kLanes + l], b = dst[(j + stride) * kLanes + l];
          dst[j * kLanes + l] = a + b;
          dst[(j + stride) * kLanes + l] = a - b;
        }
      }
    }
  }
}
#endif

template <typename ParallelFor>
void FastHash(const ParallelFor& parallel_for, const FastHashArgs& a) {
  const int64_t B = a.batch, N = a.num_vectors, D = a.dim, P = a.padded_dim, L = a.code_len;
  const int64_t per_part = HashesPerPart(P, L);
  const int64_t blocks = (N + kLanes - 1) / kLanes;
  int64_t log_p = 0;
  while ((int64_t{1} << log_p) < P) ++log_p;
  const int64_t cost = kLanes * a.num_part * (3 * P * (2 * log_p + 1) + D);
  parallel_for(B * blocks, cost, [&](int64_t begin, int64_t end) {
    // The vectors, zero-padded and transposed once per work item (every part starts from them), and the
    // transform's buffer.
    std::vector<float> storage(2 * P * kLanes);
    float* input = storage.data();
    float* buf = input + P * kLanes;
    for (int64_t unit = begin; unit < end; ++unit) {
      const int64_t b = unit / blocks;
      const int64_t n0 = (unit % blocks) * kLanes;
      const int64_t count = std::min<int64_t>(kLanes, N - n0);
      const float* rows = a.vectors + (b * N + n0) * D;
      std::fill(input, input + P * kLanes, 0.0f);
      for (int64_t l = 0; l < count; ++l) {
        for (int64_t d = 0; d < D; ++d) input[d * kLanes + l] = rows[l * D + d];
      }
      for (int64_t part = 0; part < a.num_part; ++part) {
        const float* diag0 = a.projections + ((b * 3 + 0) * a.num_part + part) * P;
        const float* diag1 = a.projections + ((b * 3 + 1) * a.num_part + part) * P;
        const float* diag2 = a.projections + ((b * 3 + 2) * a.num_part + part) * P;
        ScaledHadamardLanes(input, buf, diag0, P);
        ScaledHadamardLanes(buf, buf, diag1, P);
        ScaledHadamardLanes(buf, buf, diag2, P);
        for (int64_t j = 0; j < per_part; ++j) {
          const int64_t hash = part * per_part + j;
          if (hash >= a.num_hash) break;
          int32_t code[kLanes] = {0};
          for (int64_t i = 0; i < L; ++i) {
            const float* x = buf + (j * L + i) * kLanes;
            for (int l = 0; l < kLanes; ++l) code[l] |= static_cast<int32_t>(x[l] > 0.0f) << i;
          }
          for (int64_t l = 0; l < count; ++l) {
            const int64_t row = b * N + n0 + l;
            a.codes[row * a.num_hash + hash] = a.mask[row] != 0 ? code[l] : 0;
          }
        }
      }
    }
  });
}

// --------------------------------------------------------------------------------------------------------------

struct CumulationArgs {
  const int32_t* query_mask;    // [B, Nq]
  const int32_t* query_code;    // [B, Nq, H]
  const float* query_weight;    // [B, Nq, W] (weighted cumulation only)
  const int32_t* key_mask;      // [B, Nk]
  const int32_t* key_code;      // [B, Nk, H]
  const float* key_weight;      // [B, Nk, W] (weighted cumulation only)
  const float* value;           // [B, Nk, D]
  float* out;                   // [B, Nq, D]
  int64_t batch, num_query, num_key, num_hash, weight_dim, value_dim, capacity;
};

inline void AddRow(float* __restrict acc, const float* __restrict row, int64_t n) {
  for (int64_t i = 0; i < n; ++i) acc[i] += row[i];
}

inline void AddScaledRow(float* __restrict acc, float scale, const float* __restrict row, int64_t n) {
  for (int64_t i = 0; i < n; ++i) acc[i] += scale * row[i];
}

// Dot product with 8 independent partial sums (vectorises without reassociating any single sum).
inline float Dot(const float* __restrict x, const float* __restrict y, int64_t n) {
  float part[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    for (int l = 0; l < 8; ++l) part[l] += x[i + l] * y[i + l];
  }
  float sum = ((part[0] + part[4]) + (part[1] + part[5])) + ((part[2] + part[6]) + (part[3] + part[7]));
  for (; i < n; ++i) sum += x[i] * y[i];
  return sum;
}

inline void PrefetchRow(const float* row, int64_t n) {
  for (int64_t i = 0; i < n; i += 16) __builtin_prefetch(row + i);
}

// out += sum_j <qw, key_weight[keys[j]]> value[keys[j]], four keys at a time: four dot products share the loads
// of qw, and one pass over `out` adds four scaled value rows.
inline void PairsUpdate(float* __restrict out, const float* __restrict qw, const int32_t* keys, int64_t nk,
                        const float* key_weight, const float* value, int64_t W, int64_t D) {
  constexpr int kL = 16;
  int64_t j = 0;
  for (; j + 4 <= nk; j += 4) {
    const float* k0 = key_weight + keys[j] * W;
    const float* k1 = key_weight + keys[j + 1] * W;
    const float* k2 = key_weight + keys[j + 2] * W;
    const float* k3 = key_weight + keys[j + 3] * W;
    float p0[kL] = {0}, p1[kL] = {0}, p2[kL] = {0}, p3[kL] = {0};
    int64_t w = 0;
    for (; w + kL <= W; w += kL) {
      for (int l = 0; l < kL; ++l) {
        const float x = qw[w + l];
        p0[l] += x * k0[w + l];
        p1[l] += x * k1[w + l];
        p2[l] += x * k2[w + l];
        p3[l] += x * k3[w + l];
      }
    }
    float s0 = 0.f, s1 = 0.f, s2 = 0.f, s3 = 0.f;
    for (int l = 0; l < kL; ++l) {
      s0 += p0[l];
      s1 += p1[l];
      s2 += p2[l];
      s3 += p3[l];
    }
    for (; w < W; ++w) {
      s0 += qw[w] * k0[w];
      s1 += qw[w] * k1[w];
      s2 += qw[w] * k2[w];
      s3 += qw[w] * k3[w];
    }
    const float* v0 = value + keys[j] * D;
    const float* v1 = value + keys[j + 1] * D;
    const float* v2 = value + keys[j + 2] * D;
    const float* v3 = value + keys[j + 3] * D;
    for (int64_t d = 0; d < D; ++d) out[d] += (s0 * v0[d] + s1 * v1[d]) + (s2 * v2[d] + s3 * v3[d]);
  }
  for (; j < nk; ++j) {
    AddScaledRow(out, Dot(qw, key_weight + keys[j] * W, W), value + keys[j] * D, D);
  }
}

// out[0:D] += tables[h * table_floats + codes[h] * D + (0:D)] for h = 0 .. num_tables - 1, in that order, each
// slice of 8 floats summed in a register (a GCC vector: as a loop of AddRow per table, or over a float[8], GCC
// fused the rows' loops and added them one float at a time, half of lsh_cumulation's time). The vectors are read
// and written through an unaligned may_alias pointer type, not memcpy: with x86-64-v3's tuning (split unaligned
// 256-bit loads) GCC moved each memcpy'd row through the stack in halves and the loop stalled on the stack.
inline void SumTableRows(float* __restrict out, const float* tables, const int32_t* codes, int64_t num_tables,
                         int64_t table_floats, int64_t D) {
  int64_t d0 = 0;
#if defined(__GNUC__) && !defined(__CUDACC__)
  typedef float Vec8 __attribute__((vector_size(8 * sizeof(float)), aligned(4), may_alias));
  for (; d0 + 8 <= D; d0 += 8) {
    Vec8 acc = *reinterpret_cast<const Vec8*>(out + d0);
    for (int64_t h = 0; h < num_tables; ++h) {
      acc += *reinterpret_cast<const Vec8*>(tables + h * table_floats + codes[h] * D + d0);
    }
    *reinterpret_cast<Vec8*>(out + d0) = acc;
  }
#endif
  for (int64_t h = 0; h < num_tables; ++h) AddRow(out + d0, tables + h * table_floats + codes[h] * D + d0, D - d0);
}

// out[b, q] = query_mask / H * (out[b, q] accumulated sums); rows of masked queries become 0.
template <typename ParallelFor>
void FinishCumulation(const ParallelFor& parallel_for, const CumulationArgs& a) {
  const int64_t D = a.value_dim;
  const float num_hash = static_cast<float>(a.num_hash);
  parallel_for(a.batch * a.num_query, D, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      float* out = a.out + row * D;
      if (a.query_mask[row] == 0) {
        std::fill(out, out + D, 0.0f);
      } else {
        for (int64_t d = 0; d < D; ++d) out[d] = out[d] / num_hash;
      }
    }
  });
}

// Hash tables of summed values: for each (batch, hash) a [capacity, D] table built from the keys, then read by
// the queries. Tables for up to kTableBudgetBytes are alive at once; beyond that, batches and hashes go in chunks.
template <typename ParallelFor>
void LshCumulation(const ParallelFor& parallel_for, const CumulationArgs& a) {
  const int64_t B = a.batch, Nq = a.num_query, Nk = a.num_key, H = a.num_hash, D = a.value_dim, C = a.capacity;
  std::fill(a.out, a.out + B * Nq * D, 0.0f);
  if (B == 0 || Nq == 0 || D == 0 || H == 0) return;
  const int64_t table_floats = C * D;
  const int64_t per_hash_bytes = std::max<int64_t>(1, table_floats * static_cast<int64_t>(sizeof(float)));
  const int64_t hash_chunk = std::max<int64_t>(1, std::min<int64_t>(H, kTableBudgetBytes / per_hash_bytes));
  const int64_t batch_chunk =
      hash_chunk == H ? std::max<int64_t>(1, std::min<int64_t>(B, kTableBudgetBytes / (per_hash_bytes * H))) : 1;
  // A build work item adds each key once to a group of tables: one pass over the values for several hashes.
  constexpr int64_t kGroup = 8;
  // Not zeroed here: each build work item zeroes its own group's tables (a second pass over up to 64 MB).
  const std::unique_ptr<float[]> table_storage(new float[batch_chunk * hash_chunk * table_floats]);
  float* const tables = table_storage.get();
  // The query pass reads the tables in groups of hashes whose tables take about kQueryTableBytes (in L2 with a
  // block of kQueryBlock output rows), each group by all of a block's queries: every query reading all of its
  // hashes' tables in turn (4 MB for 32 hashes of 512 x 64) missed the cache on nearly every row.
  constexpr int64_t kQueryBlock = 512;
  constexpr int64_t kQueryTableBytes = int64_t{512} << 10;
  const int64_t query_group = std::max<int64_t>(1, kQueryTableBytes / per_hash_bytes);
  for (int64_t b0 = 0; b0 < B; b0 += batch_chunk) {
    const int64_t nb = std::min(batch_chunk, B - b0);
    for (int64_t h0 = 0; h0 < H; h0 += hash_chunk) {
      const int64_t nh = std::min(hash_chunk, H - h0);
      const int64_t groups = (nh + kGroup - 1) / kGroup;
      parallel_for(nb * groups, Nk * kGroup * D + kGroup * table_floats, [&](int64_t begin, int64_t end) {
        for (int64_t unit = begin; unit < end; ++unit) {
          const int64_t bl = unit / groups, g0 = (unit % groups) * kGroup;
          const int64_t g1 = std::min(nh, g0 + kGroup);
          const int64_t b = b0 + bl;
          float* group_tables = tables + (bl * hash_chunk + g0) * table_floats;
          std::fill(group_tables, group_tables + (g1 - g0) * table_floats, 0.0f);
          for (int64_t k = 0; k < Nk; ++k) {
            if (a.key_mask[b * Nk + k] == 0) continue;
            const float* v = a.value + (b * Nk + k) * D;
            const int32_t* codes = a.key_code + (b * Nk + k) * H + h0;
            for (int64_t g = g0; g < g1; ++g) {
              AddRow(tables + ((bl * hash_chunk + g) * C + codes[g]) * D, v, D);
            }
          }
        }
      });
      const int64_t blocks = (Nq + kQueryBlock - 1) / kQueryBlock;
      parallel_for(nb * blocks, kQueryBlock * nh * D, [&](int64_t begin, int64_t end) {
        for (int64_t unit = begin; unit < end; ++unit) {
          const int64_t bl = unit / blocks, q0 = (unit % blocks) * kQueryBlock;
          const int64_t q1 = std::min(Nq, q0 + kQueryBlock);
          const int64_t b = b0 + bl;
          for (int64_t g0 = 0; g0 < nh; g0 += query_group) {  // hashes in increasing order for every query
            const float* group_tables = tables + (bl * hash_chunk + g0) * table_floats;
            for (int64_t q = q0; q < q1; ++q) {
              if (a.query_mask[b * Nq + q] == 0) continue;
              float* out = a.out + (b * Nq + q) * D;
              const int32_t* codes = a.query_code + (b * Nq + q) * H + h0 + g0;
              SumTableRows(out, group_tables, codes, std::min(query_group, nh - g0), C * D, D);
            }
          }
        }
      });
    }
  }
  FinishCumulation(parallel_for, a);
}

// The unmasked rows of one (batch, hash) sorted by code: `rows` (row indices, stable within a code) and `runs`
// (code, begin, end) over `rows`, in increasing code order. A counting sort when the table is small compared with
// the rows, otherwise std::sort (no O(capacity) memory for long codes).
struct Buckets {
  std::vector<int32_t> rows;
  std::vector<int32_t> runs;  // triples: code, begin, end
  void Build(const int32_t* mask, const int32_t* codes, int64_t num_rows, int64_t num_hash, int64_t capacity,
             std::vector<int32_t>* counts) {
    rows.clear();
    runs.clear();
    if (capacity <= 4 * num_rows + 1024) {
      counts->assign(capacity + 1, 0);
      int32_t* count = counts->data();
      for (int64_t r = 0; r < num_rows; ++r) {
        if (mask[r] != 0) ++count[codes[r * num_hash] + 1];
      }
      for (int64_t c = 0; c < capacity; ++c) {
        if (count[c + 1] > 0) {
          runs.push_back(static_cast<int32_t>(c));
          runs.push_back(count[c]);
          runs.push_back(count[c] + count[c + 1]);
        }
        count[c + 1] += count[c];
      }
      rows.resize(count[capacity]);
      for (int64_t r = 0; r < num_rows; ++r) {
        if (mask[r] != 0) rows[count[codes[r * num_hash]]++] = static_cast<int32_t>(r);
      }
      return;
    }
    std::vector<std::pair<int32_t, int32_t>> pairs;
    for (int64_t r = 0; r < num_rows; ++r) {
      if (mask[r] != 0) pairs.emplace_back(codes[r * num_hash], static_cast<int32_t>(r));
    }
    std::sort(pairs.begin(), pairs.end());
    rows.resize(pairs.size());
    for (size_t i = 0; i < pairs.size(); ++i) {
      rows[i] = pairs[i].second;
      if (i == 0 || pairs[i].first != pairs[i - 1].first) {
        if (i > 0) runs.push_back(static_cast<int32_t>(i));
        runs.push_back(pairs[i].first);
        runs.push_back(static_cast<int32_t>(i));
      }
    }
    if (!pairs.empty()) runs.push_back(static_cast<int32_t>(pairs.size()));
  }
};

// For every hash, the queries and keys sharing a bucket contribute
//   out[q] += <query_weight[q], key_weight[k]> value[k]   for all (q, k) in the bucket,
// computed per bucket either pair by pair (|Q| |K| (W + D) operations) or through the bucket's W x D summary
// S = sum_k key_weight[k] value[k]^T, out[q] += query_weight[q]^T S ((|Q| + |K|) W D operations), whichever is
// cheaper: small buckets (short sequences) go pairwise, large ones stay linear in the sequence length.
// Within one (batch, hash) the buckets hold disjoint queries, so they run in parallel without races.
template <typename ParallelFor>
void LshWeightedCumulation(const ParallelFor& parallel_for, const CumulationArgs& a) {
  const int64_t B = a.batch, Nq = a.num_query, Nk = a.num_key, H = a.num_hash, W = a.weight_dim, D = a.value_dim;
  const int64_t C = a.capacity;
  std::fill(a.out, a.out + B * Nq * D, 0.0f);
  if (B == 0 || Nq == 0 || Nk == 0 || D == 0 || H == 0) {
    FinishCumulation(parallel_for, a);
    return;
  }
  std::vector<Buckets> query_buckets(B * H), key_buckets(B * H);
  parallel_for(B * H, 4 * (Nq + Nk) + 2 * std::min(C, 4 * (Nq + Nk)), [&](int64_t begin, int64_t end) {
    std::vector<int32_t> counts;
    for (int64_t unit = begin; unit < end; ++unit) {
      const int64_t b = unit / H, h = unit % H;
      query_buckets[unit].Build(a.query_mask + b * Nq, a.query_code + b * Nq * H + h, Nq, H, C, &counts);
      key_buckets[unit].Build(a.key_mask + b * Nk, a.key_code + b * Nk * H + h, Nk, H, C, &counts);
    }
  });
  std::vector<int32_t> matches;  // per (batch, hash): query run index, key run index
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t h = 0; h < H; ++h) {
      const Buckets& qb = query_buckets[b * H + h];
      const Buckets& kb = key_buckets[b * H + h];
      matches.clear();
      size_t i = 0, j = 0;
      while (i < qb.runs.size() && j < kb.runs.size()) {
        if (qb.runs[i] < kb.runs[j]) {
          i += 3;
        } else if (qb.runs[i] > kb.runs[j]) {
          j += 3;
        } else {
          matches.push_back(static_cast<int32_t>(i));
          matches.push_back(static_cast<int32_t>(j));
          i += 3;
          j += 3;
        }
      }
      const int64_t num_matches = static_cast<int64_t>(matches.size() / 2);
      if (num_matches == 0) continue;
      const int64_t mean_rows = std::max<int64_t>(1, (Nq + Nk) / num_matches);
      parallel_for(num_matches, mean_rows * W * std::min<int64_t>(D, mean_rows), [&](int64_t begin, int64_t end) {
        std::vector<float> summary;
        for (int64_t m = begin; m < end; ++m) {
          const int32_t* qrun = qb.runs.data() + matches[2 * m];
          const int32_t* krun = kb.runs.data() + matches[2 * m + 1];
          const int64_t nq = qrun[2] - qrun[1], nk = krun[2] - krun[1];
          const int32_t* queries = qb.rows.data() + qrun[1];
          const int32_t* keys = kb.rows.data() + krun[1];
          if (m + 1 < end) {
            // The rows of a bucket are scattered over the sequence: fetch the next bucket's while this one runs.
            const int32_t* next_q = qb.runs.data() + matches[2 * m + 2];
            const int32_t* next_k = kb.runs.data() + matches[2 * m + 3];
            for (int32_t i = next_q[1]; i < next_q[2]; ++i) {
              PrefetchRow(a.query_weight + (b * Nq + qb.rows[i]) * W, W);
              PrefetchRow(a.out + (b * Nq + qb.rows[i]) * D, D);
            }
            for (int32_t i = next_k[1]; i < next_k[2]; ++i) {
              PrefetchRow(a.key_weight + (b * Nk + kb.rows[i]) * W, W);
              PrefetchRow(a.value + (b * Nk + kb.rows[i]) * D, D);
            }
          }
          if (nq * nk * (W + D) <= (nq + nk) * W * D) {
            for (int64_t i = 0; i < nq; ++i) {
              const int64_t q = b * Nq + queries[i];
              PairsUpdate(a.out + q * D, a.query_weight + q * W, keys, nk, a.key_weight + b * Nk * W,
                          a.value + b * Nk * D, W, D);
            }
          } else {
            summary.assign(W * D, 0.0f);
            for (int64_t j = 0; j < nk; ++j) {
              const int64_t k = b * Nk + keys[j];
              const float* kw = a.key_weight + k * W;
              const float* v = a.value + k * D;
              for (int64_t w = 0; w < W; ++w) AddScaledRow(summary.data() + w * D, kw[w], v, D);
            }
            for (int64_t i = 0; i < nq; ++i) {
              const int64_t q = b * Nq + queries[i];
              float* out = a.out + q * D;
              const float* qw = a.query_weight + q * W;
              for (int64_t w = 0; w < W; ++w) AddScaledRow(out, qw[w], summary.data() + w * D, D);
            }
          }
        }
      });
    }
  }
  FinishCumulation(parallel_for, a);
}

}  // namespace lsh
}  // namespace tfmodels

#endif  // TFMODELS_LSH_LSH_KERNELS_H_
