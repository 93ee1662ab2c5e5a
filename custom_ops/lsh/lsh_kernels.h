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
#include <vector>

namespace tfmodels {
namespace lsh {

// Vectors hashed together by one CPU work item, laid out "structure of arrays" so that every butterfly of the
// Walsh-Hadamard transform is one SIMD operation over kLanes vectors.
constexpr int kLanes = 16;
// Upper bound on the scratch hash tables of lsh_cumulation (bytes); more hash functions are processed in chunks.
constexpr int64_t kTableBudgetBytes = int64_t{64} << 20;

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

// In-place unnormalised Walsh-Hadamard transform of kLanes vectors stored as buf[d * kLanes + lane].
inline void HadamardLanes(float* buf, int64_t padded_dim) {
  for (int64_t stride = padded_dim / 2; stride >= 1; stride /= 2) {
    for (int64_t start = 0; start < padded_dim; start += 2 * stride) {
      for (int64_t j = start; j < start + stride; ++j) {
        float* x = buf + j * kLanes;
        float* y = buf + (j + stride) * kLanes;
        for (int l = 0; l < kLanes; ++l) {
          const float a = x[l], b = y[l];
          x[l] = a + b;
          y[l] = a - b;
        }
      }
    }
  }
}

inline void ScaleLanes(float* buf, const float* diag, int64_t padded_dim) {
  for (int64_t d = 0; d < padded_dim; ++d) {
    const float s = diag[d];
    float* x = buf + d * kLanes;
    for (int l = 0; l < kLanes; ++l) x[l] = x[l] * s;
  }
}

template <typename ParallelFor>
void FastHash(const ParallelFor& parallel_for, const FastHashArgs& a) {
  const int64_t B = a.batch, N = a.num_vectors, D = a.dim, P = a.padded_dim, L = a.code_len;
  const int64_t per_part = HashesPerPart(P, L);
  const int64_t blocks = (N + kLanes - 1) / kLanes;
  int64_t log_p = 0;
  while ((int64_t{1} << log_p) < P) ++log_p;
  const int64_t cost = kLanes * a.num_part * (3 * P * (2 * log_p + 1) + D);
  parallel_for(B * blocks, cost, [&](int64_t begin, int64_t end) {
    std::vector<float> storage(P * kLanes);
    float* buf = storage.data();
    for (int64_t unit = begin; unit < end; ++unit) {
      const int64_t b = unit / blocks;
      const int64_t n0 = (unit % blocks) * kLanes;
      const int64_t count = std::min<int64_t>(kLanes, N - n0);
      const float* rows = a.vectors + (b * N + n0) * D;
      for (int64_t part = 0; part < a.num_part; ++part) {
        const float* diag0 = a.projections + ((b * 3 + 0) * a.num_part + part) * P;
        const float* diag1 = a.projections + ((b * 3 + 1) * a.num_part + part) * P;
        const float* diag2 = a.projections + ((b * 3 + 2) * a.num_part + part) * P;
        for (int64_t d = 0; d < P; ++d) {
          float* x = buf + d * kLanes;
          for (int l = 0; l < kLanes; ++l) x[l] = (l < count && d < D) ? rows[l * D + d] : 0.0f;
        }
        ScaleLanes(buf, diag0, P);
        HadamardLanes(buf, P);
        ScaleLanes(buf, diag1, P);
        HadamardLanes(buf, P);
        ScaleLanes(buf, diag2, P);
        HadamardLanes(buf, P);
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
  std::vector<float> tables(batch_chunk * hash_chunk * table_floats);
  constexpr int64_t kQueryBlock = 32;
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
          float* group_tables = tables.data() + (bl * hash_chunk + g0) * table_floats;
          std::fill(group_tables, group_tables + (g1 - g0) * table_floats, 0.0f);
          for (int64_t k = 0; k < Nk; ++k) {
            if (a.key_mask[b * Nk + k] == 0) continue;
            const float* v = a.value + (b * Nk + k) * D;
            const int32_t* codes = a.key_code + (b * Nk + k) * H + h0;
            for (int64_t g = g0; g < g1; ++g) {
              AddRow(tables.data() + ((bl * hash_chunk + g) * C + codes[g]) * D, v, D);
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
          const float* batch_tables = tables.data() + bl * hash_chunk * table_floats;
          for (int64_t q = q0; q < q1; ++q) {
            if (a.query_mask[b * Nq + q] == 0) continue;
            float* out = a.out + (b * Nq + q) * D;
            const int32_t* codes = a.query_code + (b * Nq + q) * H + h0;
            for (int64_t h = 0; h < nh; ++h) AddRow(out, batch_tables + (h * C + codes[h]) * D, D);
          }
        }
      });
    }
  }
  FinishCumulation(parallel_for, a);
}

// Buckets of keys per (batch, hash): offsets [B*H*(C+1)] and key indices sorted by code (stable) [B*H*Nk].
template <typename ParallelFor>
void BucketKeys(const ParallelFor& parallel_for, const CumulationArgs& a, std::vector<int32_t>* offsets,
                std::vector<int32_t>* sorted) {
  const int64_t B = a.batch, Nk = a.num_key, H = a.num_hash, C = a.capacity;
  offsets->assign(B * H * (C + 1), 0);
  sorted->resize(B * H * Nk);
  parallel_for(B * H, 3 * Nk + C, [&](int64_t begin, int64_t end) {
    for (int64_t unit = begin; unit < end; ++unit) {
      const int64_t b = unit / H, h = unit % H;
      int32_t* offset = offsets->data() + unit * (C + 1);
      int32_t* keys = sorted->data() + unit * Nk;
      for (int64_t k = 0; k < Nk; ++k) {
        if (a.key_mask[b * Nk + k] != 0) ++offset[a.key_code[(b * Nk + k) * H + h] + 1];
      }
      for (int64_t c = 0; c < C; ++c) offset[c + 1] += offset[c];
      std::vector<int32_t> cursor(offset, offset + C);
      for (int64_t k = 0; k < Nk; ++k) {
        if (a.key_mask[b * Nk + k] != 0) keys[cursor[a.key_code[(b * Nk + k) * H + h]]++] = static_cast<int32_t>(k);
      }
    }
  });
}

// For every query, every key sharing its bucket in a hash adds <query_weight, key_weight> * value: the cost is
// the number of collisions times (W + D), which for YOSO's code lengths is far below the (Nq + Nk) * H * W * D of
// per-weight-dimension hash tables.
template <typename ParallelFor>
void LshWeightedCumulation(const ParallelFor& parallel_for, const CumulationArgs& a) {
  const int64_t B = a.batch, Nq = a.num_query, Nk = a.num_key, H = a.num_hash, W = a.weight_dim, D = a.value_dim;
  const int64_t C = a.capacity;
  std::fill(a.out, a.out + B * Nq * D, 0.0f);
  if (B == 0 || Nq == 0 || D == 0 || H == 0) return;
  std::vector<int32_t> offsets, sorted;
  BucketKeys(parallel_for, a, &offsets, &sorted);
  const int64_t mean_bucket = std::max<int64_t>(1, Nk / std::max<int64_t>(1, std::min(C, Nk)));
  parallel_for(B * Nq, H * mean_bucket * (W + D) + H, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      if (a.query_mask[row] == 0) continue;
      const int64_t b = row / Nq;
      float* out = a.out + row * D;
      const float* qw = a.query_weight + row * W;
      const int32_t* codes = a.query_code + row * H;
      for (int64_t h = 0; h < H; ++h) {
        const int32_t* offset = offsets.data() + (b * H + h) * (C + 1);
        const int32_t* keys = sorted.data() + (b * H + h) * Nk;
        const int32_t code = codes[h];
        for (int32_t i = offset[code]; i < offset[code + 1]; ++i) {
          const int64_t k = b * Nk + keys[i];
          AddScaledRow(out, Dot(qw, a.key_weight + k * W, W), a.value + k * D, D);
        }
      }
    }
  });
  FinishCumulation(parallel_for, a);
}

}  // namespace lsh
}  // namespace tfmodels

#endif  // TFMODELS_LSH_LSH_KERNELS_H_
