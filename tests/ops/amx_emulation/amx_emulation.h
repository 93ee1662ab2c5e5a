// Software AMX tiles, for test builds of the dense-attention op on CPUs without AMX (tests/ops/amx_emulation's
// emulated_sources includes this file first in a copy of custom_ops/dense_attention/dense_attention_bf16.h).
//
// Why: the op's AMX kernel (AmxConfigure, AmxProduct, AmxRelease) runs only where the CPU has AMX-BF16, and most
// of this project's machines have none, so a change to it would otherwise go unexecuted until an Intel session.
// Here the kernel's code runs unchanged: its _tile_* operations are replaced by the functions below (macros
// defined after <immintrin.h>'s own), its `ldtilecfg` by LoadConfig, and its availability check by the
// AVX512-BF16 one (the two TFMODELS_AMX_EMULATION branches of the production header).
//
// What is emulated, after the Intel SDM (vol. 2, "Intel AMX" instructions, palette 1): eight tile registers of at
// most 16 rows of 64 bytes per thread; LDTILECFG's 64-byte configuration (palette, start row, reserved bytes,
// bytes per row and rows of each tile) with its #GP checks; TILELOADD / TILESTORED rows of the configured width
// at a byte stride (the rest of a loaded tile zero); TILEZERO; TILERELEASE; TDPBF16PS's shape checks (#UD) and
// arithmetic as the SDM's pseudo-code gives it: for each output element, the products of the even and of the odd
// elements of the pairs summed apart in float32 from zero, then their sum added to the destination; inputs with
// denormals as zero, results flushed to zero, round to nearest even. (The Intrinsics Guide's older pseudo-code adds
// each product to the destination in turn: the same sums in another order.) A use the hardware faults on ends the
// process with a message naming the check (SIGABRT). At exit the counts of each operation go to stderr, so that a
// test can tell the kernel ran.
//
// What it is not: no speed; no bounds of its own on the memory a load or store touches (the sanitized build's
// AddressSanitizer checks them); and the hardware's float32 sums may differ from the pseudo-code's in the last
// bits (the tests compare the op at the bfloat16 tolerance). The tiles are per thread, as on the hardware.
#ifndef TFMODELS_AMX_EMULATION_H_
#define TFMODELS_AMX_EMULATION_H_
#define TFMODELS_AMX_EMULATION 1

#include <immintrin.h>  // first: the _tile_* macros it defines are replaced below

#include <atomic>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace tfmodels_amx_emulation {

constexpr int kTiles = 8;      // palette 1: tmm0-tmm7
constexpr int kMaxRows = 16;   // palette 1's max_rows
constexpr int kMaxBytes = 64;  // palette 1's bytes_per_row

struct Tiles {
  bool configured = false;
  int rows[kTiles] = {};
  int bytes[kTiles] = {};
  alignas(64) unsigned char data[kTiles][kMaxRows][kMaxBytes] = {};
};

// Each thread's tile registers and configuration, as the hardware keeps them per thread.
inline Tiles& ThreadTiles() {
  static thread_local Tiles tiles;
  return tiles;
}

// How often each operation ran in this process, printed to stderr at exit (also where none ran: a library built
// with the emulation always reports, so that a test can tell it was the one loaded).
struct Counts {
  std::atomic<long> configurations{0}, loads{0}, stores{0}, zeroings{0}, products{0}, releases{0};
  ~Counts() {
    std::fprintf(stderr,
                 "AMX emulation: %ld tile configurations, %ld TILELOADD, %ld TILESTORED, %ld TILEZERO, "
                 "%ld TDPBF16PS, %ld TILERELEASE\n",
                 configurations.load(), loads.load(), stores.load(), zeroings.load(), products.load(),
                 releases.load());
  }
};
inline Counts process_counts;  // constructed when the library loads
inline Counts& ProcessCounts() { return process_counts; }

[[noreturn]] inline void Fault(const char* fault, const char* instruction, const char* why, int tile = -1) {
  if (tile >= 0) {
    std::fprintf(stderr, "AMX emulation: %s in %s: %s (tile %d)\n", fault, instruction, why, tile);
  } else {
    std::fprintf(stderr, "AMX emulation: %s in %s: %s\n", fault, instruction, why);
  }
  std::fflush(stderr);
  std::abort();
}

inline void Release() {
  ProcessCounts().releases++;
  ThreadTiles() = Tiles();
}

// LDTILECFG: palette 0 releases the tiles; palette 1 configures them. The checks are the SDM's #GP conditions.
inline void LoadConfig(const void* memory) {
  const auto* config = static_cast<const unsigned char*>(memory);
  const int palette = config[0];
  if (palette == 0) {
    Release();
    return;
  }
  if (palette != 1) Fault("#GP", "LDTILECFG", "palette other than 0 or 1");
  if (config[1] != 0) Fault("#GP", "LDTILECFG", "start_row is not 0 (the emulation does not restart a load)");
  for (int i = 2; i < 16; ++i) {
    if (config[i] != 0) Fault("#GP", "LDTILECFG", "a reserved byte (2-15) is not 0");
  }
  Tiles configured;
  for (int t = 0; t < 16; ++t) {
    uint16_t bytes;
    std::memcpy(&bytes, config + 16 + 2 * t, sizeof(bytes));
    const int rows = config[48 + t];
    if (t >= kTiles) {
      if (bytes != 0 || rows != 0) Fault("#GP", "LDTILECFG", "a tile past tmm7 is configured", t);
      continue;
    }
    if (rows > kMaxRows) Fault("#GP", "LDTILECFG", "more than 16 rows", t);
    if (bytes > kMaxBytes) Fault("#GP", "LDTILECFG", "more than 64 bytes per row", t);
    if ((rows == 0) != (bytes == 0)) Fault("#GP", "LDTILECFG", "rows and bytes per row not both 0 or both set", t);
    configured.rows[t] = rows;
    configured.bytes[t] = bytes;
  }
  configured.configured = true;
  ProcessCounts().configurations++;
  ThreadTiles() = configured;
}

// The tile `tile` as an operand of `instruction`: #UD unless the tiles are configured and it is one of them.
inline Tiles& Operand(const char* instruction, int tile) {
  Tiles& tiles = ThreadTiles();
  if (!tiles.configured) Fault("#UD", instruction, "no tile configuration loaded", tile);
  if (tile < 0 || tile >= kTiles) Fault("#UD", instruction, "no such tile register", tile);
  if (tiles.rows[tile] == 0) Fault("#UD", instruction, "the tile is not configured (0 rows)", tile);
  return tiles;
}

inline void Load(int tile, const void* base, long stride) {
  Tiles& tiles = Operand("TILELOADD", tile);
  ProcessCounts().loads++;
  std::memset(tiles.data[tile], 0, sizeof(tiles.data[tile]));
  for (int r = 0; r < tiles.rows[tile]; ++r) {
    std::memcpy(tiles.data[tile][r], static_cast<const char*>(base) + r * stride, tiles.bytes[tile]);
  }
}

inline void Store(int tile, void* base, long stride) {
  Tiles& tiles = Operand("TILESTORED", tile);
  ProcessCounts().stores++;
  for (int r = 0; r < tiles.rows[tile]; ++r) {
    std::memcpy(static_cast<char*>(base) + r * stride, tiles.data[tile][r], tiles.bytes[tile]);
  }
}

inline void Zero(int tile) {
  Tiles& tiles = Operand("TILEZERO", tile);
  ProcessCounts().zeroings++;
  std::memset(tiles.data[tile], 0, sizeof(tiles.data[tile]));
}

// A bfloat16 value as float32, denormals as zero (DAZ).
inline float Bf16(const unsigned char* bits) {
  uint16_t half;
  std::memcpy(&half, bits, sizeof(half));
  if ((half & 0x7F80) == 0) half &= 0x8000;
  const uint32_t word = static_cast<uint32_t>(half) << 16;
  float value;
  std::memcpy(&value, &word, sizeof(value));
  return value;
}

// A float32 result with denormals flushed to zero (FTZ).
inline float FlushDenormal(float value) { return std::fabs(value) < FLT_MIN ? std::copysign(0.0f, value) : value; }

// TDPBF16PS dst, a, b: dst[m][n] += sum over k of a[m][2k, 2k + 1] . b[k][2n, 2n + 1] (float32 sums).
inline void DotBf16(int dst, int a, int b) {
  const char* name = "TDPBF16PS";
  Tiles& tiles = Operand(name, dst);
  Operand(name, a);
  Operand(name, b);
  if (dst == a || dst == b || a == b) Fault("#UD", name, "the three tiles are not distinct", dst);
  const int m_rows = tiles.rows[dst], n_bytes = tiles.bytes[dst], k_bytes = tiles.bytes[a];
  if (n_bytes % 4 != 0 || k_bytes % 4 != 0) Fault("#UD", name, "bytes per row not a multiple of 4", dst);
  if (tiles.rows[a] != m_rows) Fault("#UD", name, "the A tile's rows differ from the destination's", a);
  if (tiles.bytes[b] != n_bytes) Fault("#UD", name, "the B tile's row width differs from the destination's", b);
  if (tiles.rows[b] != k_bytes / 4) Fault("#UD", name, "the B tile's rows are not the A tile's row width / 4", b);
  ProcessCounts().products++;
  for (int m = 0; m < m_rows; ++m) {
    float even[kMaxBytes / 4] = {}, odd[kMaxBytes / 4] = {}, sums[kMaxBytes / 4];
    for (int k = 0; k < k_bytes / 4; ++k) {
      const unsigned char* a_pair = tiles.data[a][m] + 4 * k;
      const unsigned char* b_row = tiles.data[b][k];
      for (int n = 0; n < n_bytes / 4; ++n) {  // a product of two bfloat16 values is exact in float32
        even[n] = FlushDenormal(even[n] + Bf16(a_pair) * Bf16(b_row + 4 * n));
        odd[n] = FlushDenormal(odd[n] + Bf16(a_pair + 2) * Bf16(b_row + 4 * n + 2));
      }
    }
    std::memcpy(sums, tiles.data[dst][m], n_bytes);
    for (int n = 0; n < n_bytes / 4; ++n) sums[n] = FlushDenormal(sums[n] + FlushDenormal(even[n] + odd[n]));
    std::memcpy(tiles.data[dst][m], sums, n_bytes);
  }
}

}  // namespace tfmodels_amx_emulation

// The intrinsics the kernel uses, on the emulated tiles (GCC's are inline assembly).
#undef _tile_loadd
#undef _tile_stored
#undef _tile_zero
#undef _tile_dpbf16ps
#define _tile_loadd(tile, base, stride) ::tfmodels_amx_emulation::Load(tile, base, stride)
#define _tile_stored(tile, base, stride) ::tfmodels_amx_emulation::Store(tile, base, stride)
#define _tile_zero(tile) ::tfmodels_amx_emulation::Zero(tile)
#define _tile_dpbf16ps(dst, a, b) ::tfmodels_amx_emulation::DotBf16(dst, a, b)
#define _tile_release() ::tfmodels_amx_emulation::Release()
#define _tile_loadconfig(config) ::tfmodels_amx_emulation::LoadConfig(config)

#endif  // TFMODELS_AMX_EMULATION_H_
