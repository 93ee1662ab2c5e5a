// The bfloat16 products of the fused dense attention: the packed layouts they read, two kernels, and the
// choice between them at run time.
//
// Why: bfloat16 products are the reason to run attention in bfloat16. On AMX tiles (Intel Sapphire Rapids and
// later) one TDPBF16PS multiplies a 16 x 32 tile by a 32 x 16 tile (8192 multiply-adds), about 8x the float32 FMA
// throughput of the AVX-512 vectors. Where the CPU has AVX512-BF16 but no AMX (AMD Zen 4 and later, Intel
// Cooper Lake), VDPBF16PS multiplies 16 pairs of bfloat16 values into float32 sums, twice the multiply-adds of
// a float32 FMA (the large model's attention on a Zen 4 ran at ~180 GFLOP/s in float32). Every build compiles
// both kernels (the functions carry their own target attribute, so the wheel's x86-64-v3 and v4 libraries have
// them too) and `ChosenKernel()` decides at run time what this CPU and kernel can run; elsewhere the op converts
// the inputs to float32 (attention_op_common.h's AttendInBlocks). On CPUs without AMX the tests run the AMX kernel
// on software tiles (tests/ops/amx_emulation, the TFMODELS_AMX_EMULATION branches below).
//
// One block of query rows, as in the float32 path: scores = query . keys^T into float32, the softmax in
// float32 (ExponentiateRow, with the scale), the unnormalised probabilities rounded to bfloat16, then
// probabilities . values into float32. Rounding the probabilities to bfloat16 before the second product
// (as PyTorch's and oneDNN's bfloat16 attention do) adds a relative error of at most 2^-9 per term, within the
// rounding of the bfloat16 output; their sum (the normalisation) is taken in float32 before the rounding.
//
// The B operands (keys, values) are packed once per head in the VNNI layout both instructions read: rows of
// 16 columns x 2 inner elements (64 bytes), row i holding, for each of the 16 output columns, the pair of inner
// elements 2i and 2i + 1. A operands are row-major bfloat16 rows. AMX tiles are 16 rows of 64 bytes (16 float32
// or 32 bfloat16); tile registers 0-3 accumulate a 32 x 32 block of the output, 4-5 hold A, 6-7 hold B.
#ifndef TFMODELS_DENSE_ATTENTION_BF16_H_
#define TFMODELS_DENSE_ATTENTION_BF16_H_

#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "dense_attention/dense_attention_kernels.h"

#if defined(__x86_64__) && defined(__GNUC__)
#define TFMODELS_DENSE_ATTENTION_BF16 1
#include <cpuid.h>
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>

#define TFMODELS_AMX_TARGET __attribute__((target("amx-tile,amx-bf16,avx512f,avx512bw,avx512vl,avx512bf16")))
#define TFMODELS_BF16_VECTOR_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))

namespace tfmodels {
namespace dense_attention {
namespace bf16 {

constexpr int kTile = 16;    // rows of a tile; float32 columns of an output tile
constexpr int kInner = 32;   // bfloat16 values of the inner dimension per A row / B tile
constexpr int kBlock = 32;   // output rows and columns per 2 x 2 block of tiles
constexpr int kTileValues = kTile * kInner;  // bfloat16 values in one tile (1 KB)

// The kernels of the bfloat16 products, best last.
enum class Kernel { kFloat32, kAvx512Bf16, kAmx };

// Whether this CPU has AVX512-BF16 (with F, BW and VL) and the OS saves the AVX-512 registers (libgcc's check
// reads XCR0 as well as cpuid).
inline bool Avx512Bf16Available() {
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bf16");
}

// Whether this CPU has AMX-BF16 (and AVX512-BF16 for the rounding) and Linux lets this process use the tile
// data: the permission (arch_prctl ARCH_REQ_XCOMP_PERM for XFEATURE_XTILEDATA) is asked for once per process.
#ifdef TFMODELS_AMX_EMULATION
// Test builds only (tests/ops/amx_emulation/amx_emulation.h, included first; production builds never define
// it): software tiles stand in for the CPU's, so that the AMX kernel runs, and is checked, on CPUs without AMX.
// They need AVX512-BF16 for the rounding, as the hardware's check does.
inline bool AmxAvailable() { return Avx512Bf16Available(); }
#else
inline bool AmxAvailable() {
  unsigned a, b, c, d;
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
  const bool tiles = (d >> 22 & 1) && (d >> 24 & 1);              // amx-bf16, amx-tile
  const bool avx512 = (b >> 16 & 1) && (b >> 30 & 1) && (b >> 31 & 1);  // avx512f, bw, vl
  if (!tiles || !avx512 || a < 1) return false;                  // a: the last subleaf
  __get_cpuid_count(7, 1, &a, &b, &c, &d);
  if (!(a >> 5 & 1)) return false;  // avx512-bf16
  constexpr long kRequestPermission = 0x1023, kTileData = 18;
  return syscall(SYS_arch_prctl, kRequestPermission, kTileData) == 0;
}
#endif

// The kernel this process runs the bfloat16 products on: the best this CPU has, at most the one
// TFMODELS_DENSE_ATTENTION_BF16 names ("amx", "avx512_bf16" or "float32"; the tests run every path the CPU has
// that way). Decided once per process; false (and *kernel unset) when the variable holds another value.
inline bool ChosenKernel(Kernel* kernel) {
  static const int chosen = [] {
    const char* wanted = std::getenv("TFMODELS_DENSE_ATTENTION_BF16");
    Kernel cap = Kernel::kAmx;
    if (wanted != nullptr && *wanted != '\0') {
      if (std::strcmp(wanted, "float32") == 0) {
        cap = Kernel::kFloat32;
      } else if (std::strcmp(wanted, "avx512_bf16") == 0) {
        cap = Kernel::kAvx512Bf16;
      } else if (std::strcmp(wanted, "amx") != 0) {
        return -1;
      }
    }
    if (cap == Kernel::kAmx && AmxAvailable()) return static_cast<int>(Kernel::kAmx);
    if (cap >= Kernel::kAvx512Bf16 && Avx512Bf16Available()) return static_cast<int>(Kernel::kAvx512Bf16);
    return static_cast<int>(Kernel::kFloat32);
  }();
  if (chosen < 0) return false;
  *kernel = static_cast<Kernel>(chosen);
  return true;
}

// Tile configuration (palette 1): the layout _tile_loadconfig reads.
struct alignas(64) TileConfig {
  uint8_t palette, start_row, reserved[14];
  uint16_t bytes_per_row[16];
  uint8_t rows[16];
};

// Sets every tile register to 16 rows of 64 bytes, for the calling thread; Release gives the tile state back
// (a thread that keeps it makes every context switch save 8 KB more).
TFMODELS_AMX_TARGET inline void AmxConfigure() {
  TileConfig config = {};
  config.palette = 1;
  for (int t = 0; t < 8; ++t) {
    config.bytes_per_row[t] = 64;
    config.rows[t] = kTile;
  }
  // Not _tile_loadconfig: GCC 12's version tells the compiler it reads 8 bytes of the configuration, which
  // lets it drop the other stores (seen in the x86-64-v3 build: tiles unconfigured, SIGILL).
#ifdef TFMODELS_AMX_EMULATION
  tfmodels_amx_emulation::LoadConfig(&config);
#else
  asm volatile("ldtilecfg %0" : : "m"(config));
#endif
}
TFMODELS_AMX_TARGET inline void AmxRelease() { _tile_release(); }

// The keys of one head ([keys, dim] bfloat16 bits) as B tiles of the score product: for each group of 16 keys,
// RoundUp(dim, 32) / 32 consecutive tiles, row i of a tile holding dims 2i and 2i + 1 of each key (zeros past
// the last key and dim).
inline void PackKeys(const uint16_t* key, int64_t keys, int64_t dim, uint16_t* tiles) {
  const int64_t groups = RoundUp(keys, kBlock) / kTile, chunks = RoundUp(dim, kInner) / kInner;
  for (int64_t g = 0; g < groups; ++g)
    for (int64_t c = 0; c < chunks; ++c)
      for (int64_t pair = 0; pair < kTile; ++pair)
        for (int64_t n = 0; n < kTile; ++n)
          for (int64_t e = 0; e < 2; ++e) {
            const int64_t j = g * kTile + n, d = c * kInner + 2 * pair + e;
            *tiles++ = j < keys && d < dim ? key[j * dim + d] : 0;
          }
}

// The values of one head ([keys, columns] bfloat16 bits) as B tiles of the value product: for each group of 16
// columns (an even number of groups: the columns padded to a multiple of 32), padded_keys / 2 rows of 64 bytes,
// row i holding keys 2i and 2i + 1 of each column; the tile of keys [32 t, 32 t + 32) is the 16 rows from
// row 16 t.
inline void PackValues(const uint16_t* value, int64_t keys, int64_t padded_keys, int64_t columns, uint16_t* tiles) {
  const int64_t groups = RoundUp(columns, kBlock) / kTile;
  for (int64_t g = 0; g < groups; ++g)
    for (int64_t pair = 0; pair < padded_keys / 2; ++pair)
      for (int64_t n = 0; n < kTile; ++n)
        for (int64_t e = 0; e < 2; ++e) {
          const int64_t j = 2 * pair + e, column = g * kTile + n;
          *tiles++ = j < keys && column < columns ? value[j * columns + column] : 0;
        }
}

// Rounds float32 values [0, length) to bfloat16 into out[0, padded), zeros after length; padded a multiple of
// 16. The zeros matter: they meet the values' zero padding in the product (garbage there could be NaN).
TFMODELS_BF16_VECTOR_TARGET inline void RoundRow(const float* row, int64_t length, int64_t padded, uint16_t* out) {
  for (int64_t j = 0; j < padded; j += kTile) {
    const int64_t left = length - j;
    const __mmask16 mask = left >= kTile ? 0xFFFF : left <= 0 ? 0 : (1u << left) - 1;
    const __m256bh rounded = _mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(mask, row + j));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + j), reinterpret_cast<const __m256i&>(rounded));
  }
}

// out[rows, 32 G columns] (float32, out_stride floats a row) = a[rows, 32 * steps] . b, for rows a multiple of
// 32. a: bfloat16 rows a_stride values apart; b: the B tiles of G pairs of output tiles, the tile of step s of
// pair p at b + p * b_pair + s * b_step (bfloat16 values), 64 bytes a row.
TFMODELS_AMX_TARGET inline void AmxProduct(const uint16_t* a, int64_t a_stride, int64_t rows, int64_t steps,
                                        const uint16_t* b, int64_t b_pair, int64_t b_step, int64_t pairs,
                                        float* out, int64_t out_stride) {
  const int64_t a_bytes = a_stride * 2, out_bytes = out_stride * 4;
  for (int64_t p = 0; p < pairs; ++p) {
    const uint16_t* b0 = b + p * b_pair;
    const uint16_t* b1 = b0 + b_pair / 2;
    for (int64_t r = 0; r < rows; r += kBlock) {
      const uint16_t* a0 = a + r * a_stride;
      const uint16_t* a1 = a0 + kTile * a_stride;
      _tile_zero(0);
      _tile_zero(1);
      _tile_zero(2);
      _tile_zero(3);
      for (int64_t s = 0; s < steps; ++s) {
        _tile_loadd(4, a0 + s * kInner, a_bytes);
        _tile_loadd(5, a1 + s * kInner, a_bytes);
        _tile_loadd(6, b0 + s * b_step, 64);
        _tile_loadd(7, b1 + s * b_step, 64);
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 4, 7);
        _tile_dpbf16ps(2, 5, 6);
        _tile_dpbf16ps(3, 5, 7);
      }
      float* o = out + r * out_stride + p * kBlock;
      _tile_stored(0, o, out_bytes);
      _tile_stored(1, o + kTile, out_bytes);
      _tile_stored(2, o + kTile * out_stride, out_bytes);
      _tile_stored(3, o + kTile * out_stride + kTile, out_bytes);
    }
  }
}

// The AVX512-BF16 kernel: register tiles of R rows x NV groups of 16 columns (24 of the 32 vector registers
// accumulate at 6 x 4), one VDPBF16PS per row and group for each pair of inner elements: the pair of the row
// broadcast to every lane, the group's packed row of that pair as the other operand.
constexpr int kVectorRows = 6;
constexpr int kVectorGroups = 4;
// Inner pairs per step of VectorProduct: the 4 groups' rows of a step (16 KB) stay in L1 while every row tile
// uses them.
constexpr int64_t kVectorPairs = 64;

template <int R, int NV, bool Accumulate>
TFMODELS_BF16_VECTOR_TARGET inline void VectorTile(const uint16_t* a, int64_t a_stride, const uint16_t* b,
                                                   int64_t b_group, int64_t pairs, float* out, int64_t out_stride) {
  __m512 acc[R][NV];
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < NV; ++v)
      acc[r][v] = Accumulate ? _mm512_loadu_ps(out + r * out_stride + v * kTile) : _mm512_setzero_ps();
  for (int64_t i = 0; i < pairs; ++i) {
    __m512bh column[NV];
    for (int v = 0; v < NV; ++v) column[v] = (__m512bh)_mm512_loadu_si512(b + v * b_group + i * 2 * kTile);
    for (int r = 0; r < R; ++r) {
      int32_t pair;
      std::memcpy(&pair, a + r * a_stride + 2 * i, sizeof(pair));
      const __m512bh x = (__m512bh)_mm512_set1_epi32(pair);
      for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_dpbf16_ps(acc[r][v], x, column[v]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < NV; ++v) _mm512_storeu_ps(out + r * out_stride + v * kTile, acc[r][v]);
}

// A VectorTile with R (1..kVectorRows) known only at run time (as dense_attention_kernels.h's TileRows).
template <int NV, bool Accumulate>
TFMODELS_BF16_VECTOR_TARGET inline void VectorTileRows(int rows, const uint16_t* a, int64_t a_stride,
                                                       const uint16_t* b, int64_t b_group, int64_t pairs,
                                                       float* out, int64_t out_stride) {
  switch (rows) {
    case 6: return VectorTile<6, NV, Accumulate>(a, a_stride, b, b_group, pairs, out, out_stride);
    case 5: return VectorTile<5, NV, Accumulate>(a, a_stride, b, b_group, pairs, out, out_stride);
    case 4: return VectorTile<4, NV, Accumulate>(a, a_stride, b, b_group, pairs, out, out_stride);
    case 3: return VectorTile<3, NV, Accumulate>(a, a_stride, b, b_group, pairs, out, out_stride);
    case 2: return VectorTile<2, NV, Accumulate>(a, a_stride, b, b_group, pairs, out, out_stride);
    default: return VectorTile<1, NV, Accumulate>(a, a_stride, b, b_group, pairs, out, out_stride);
  }
}

// A VectorTileRows with NV (1..kVectorGroups) also known only at run time.
template <bool Accumulate>
TFMODELS_BF16_VECTOR_TARGET inline void VectorTileOf(int rows, int groups, const uint16_t* a, int64_t a_stride,
                                                     const uint16_t* b, int64_t b_group, int64_t pairs, float* out,
                                                     int64_t out_stride) {
  switch (groups) {
    case 4: return VectorTileRows<4, Accumulate>(rows, a, a_stride, b, b_group, pairs, out, out_stride);
    case 3: return VectorTileRows<3, Accumulate>(rows, a, a_stride, b, b_group, pairs, out, out_stride);
    case 2: return VectorTileRows<2, Accumulate>(rows, a, a_stride, b, b_group, pairs, out, out_stride);
    default: return VectorTileRows<1, Accumulate>(rows, a, a_stride, b, b_group, pairs, out, out_stride);
  }
}

// out[rows, 16 G columns] (float32, out_stride floats a row) = a[rows, 2 * pairs] . b, for any number of rows.
// a: bfloat16 rows a_stride values apart; b: G groups of 16 columns in the packed layout (PackKeys, PackValues),
// group g at b + g * b_group, the row of its pair i at + 32 i.
TFMODELS_BF16_VECTOR_TARGET inline void VectorProduct(const uint16_t* a, int64_t a_stride, int64_t rows,
                                                      int64_t pairs, const uint16_t* b, int64_t b_group,
                                                      int64_t groups, float* out, int64_t out_stride) {
  for (int64_t first = 0; first < pairs; first += kVectorPairs) {
    const int64_t step = pairs - first < kVectorPairs ? pairs - first : kVectorPairs;
    for (int64_t g = 0; g < groups; g += kVectorGroups) {
      const int tile_groups = static_cast<int>(groups - g < kVectorGroups ? groups - g : kVectorGroups);
      const uint16_t* b_tile = b + g * b_group + first * 2 * kTile;
      for (int64_t r = 0; r < rows; r += kVectorRows) {
        const int tile_rows = static_cast<int>(rows - r < kVectorRows ? rows - r : kVectorRows);
        const uint16_t* a_tile = a + r * a_stride + 2 * first;
        float* o = out + r * out_stride + g * kTile;
        // The first step of pairs starts the sums, the others add to them.
        if (first == 0) {
          VectorTileOf<false>(tile_rows, tile_groups, a_tile, a_stride, b_tile, b_group, step, o, out_stride);
        } else {
          VectorTileOf<true>(tile_rows, tile_groups, a_tile, a_stride, b_tile, b_group, step, o, out_stride);
        }
      }
    }
  }
}

}  // namespace bf16
}  // namespace dense_attention
}  // namespace tfmodels

#endif  // defined(__x86_64__) && defined(__GNUC__)
#endif  // TFMODELS_DENSE_ATTENTION_BF16_H_
