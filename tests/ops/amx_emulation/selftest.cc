// The AMX emulation's own checks, one scenario per run (tests/ops/test_amx_emulation.py):
//   selftest product      TDPBF16PS on emulated tiles against a double-precision sum of the same bfloat16
//                         products and, where the CPU has AVX512-BF16, against VDPBF16PS on the same pairs
//   selftest unconfigured a tile load before any LDTILECFG (#UD)
//   selftest released     a tile load after TILERELEASE (#UD)
//   selftest shapes       TDPBF16PS whose B tile's rows are not the A tile's width / 4 (#UD)
//   selftest aliased      TDPBF16PS with its destination as a source (#UD)
//   selftest reserved     LDTILECFG with a reserved byte set (#GP)
//   selftest rows         LDTILECFG of a tile with 17 rows (#GP)
// The fault scenarios end in SIGABRT with the emulation's message; "product" prints its differences and exits 0
// or 1.
#include "amx_emulation.h"

#include <cstdio>
#include <cstring>
#include <random>
#include <string>

namespace {

struct alignas(64) Config {
  uint8_t palette = 1, start_row = 0, reserved[14] = {};
  uint16_t bytes[16] = {};
  uint8_t rows[16] = {};
};

void Configure(const Config& config) { _tile_loadconfig(&config); }

Config Uniform(int rows, int bytes) {
  Config config;
  for (int t = 0; t < 8; ++t) {
    config.rows[t] = rows;
    config.bytes[t] = bytes;
  }
  return config;
}

uint16_t ToBf16(float value) {  // round to nearest even
  uint32_t word;
  std::memcpy(&word, &value, sizeof(word));
  return static_cast<uint16_t>((word + 0x7FFF + (word >> 16 & 1)) >> 16);
}

float FromBf16(uint16_t half) {
  const uint32_t word = static_cast<uint32_t>(half) << 16;
  float value;
  std::memcpy(&value, &word, sizeof(value));
  return value;
}

__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16"))) void VectorRows(
    int m_rows, int pairs, const uint16_t* a, const uint16_t* b, float* c) {
  for (int m = 0; m < m_rows; ++m) {
    __m512 sums = _mm512_loadu_ps(c + m * 16);
    for (int k = 0; k < pairs; ++k) {
      uint32_t pair;
      std::memcpy(&pair, a + m * 32 + 2 * k, sizeof(pair));
      const __m512i a_pair = _mm512_set1_epi32(static_cast<int>(pair));
      const __m512i b_row = _mm512_loadu_si512(b + k * 32);
      sums = _mm512_dpbf16_ps(sums, reinterpret_cast<const __m512bh&>(a_pair),
                              reinterpret_cast<const __m512bh&>(b_row));
    }
    _mm512_storeu_ps(c + m * 16, sums);
  }
}

// One product of `m_rows` x `pairs` pairs x 16 columns, emulated, against the references. Returns whether it
// matched.
bool CheckProduct(int m_rows, int pairs, std::mt19937* rng) {
  std::normal_distribution<float> normal;
  uint16_t a[16 * 32] = {}, b[16 * 32] = {};
  float c[16 * 16], emulated[16 * 16], vector[16 * 16];
  for (auto& x : a) x = ToBf16(normal(*rng));
  for (auto& x : b) x = ToBf16(normal(*rng));
  for (auto& x : c) x = normal(*rng);
  Config config = Uniform(m_rows, 64);
  config.rows[1] = m_rows;
  config.bytes[1] = 4 * pairs;  // A: m_rows x pairs
  config.rows[2] = pairs;       // B: pairs x 16 columns
  Configure(config);
  _tile_loadd(0, c, 64);
  _tile_loadd(1, a, 64);
  _tile_loadd(2, b, 64);
  _tile_dpbf16ps(0, 1, 2);
  std::memcpy(emulated, c, sizeof(c));
  _tile_stored(0, emulated, 64);
  _tile_release();

  double worst_exact = 0, worst_vector = 0;
  std::memcpy(vector, c, sizeof(c));
  const bool has_vectors = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bf16");
  if (has_vectors) VectorRows(m_rows, pairs, a, b, vector);
  for (int m = 0; m < m_rows; ++m) {
    for (int n = 0; n < 16; ++n) {
      double exact = c[m * 16 + n], magnitude = std::fabs(exact);
      for (int k = 0; k < 2 * pairs; ++k) {
        const double term = static_cast<double>(FromBf16(a[m * 32 + k])) * FromBf16(b[(k / 2) * 32 + 2 * n + k % 2]);
        exact += term;
        magnitude += std::fabs(term);
      }
      const float got = emulated[m * 16 + n];
      worst_exact = std::fmax(worst_exact, std::fabs(got - exact) / magnitude);
      if (has_vectors) worst_vector = std::fmax(worst_vector, std::fabs(got - vector[m * 16 + n]) / magnitude);
    }
  }
  // float32 sums of 2 * pairs + 1 terms: each addition rounds by at most 2^-24 of the running magnitude.
  const double bound = (2 * pairs + 1) * std::ldexp(1.0, -24);
  std::printf("rows %d pairs %d: vs double %.3g, vs VDPBF16PS %s%.3g (bound %.3g)\n", m_rows, pairs, worst_exact,
              has_vectors ? "" : "(no AVX512-BF16) ", worst_vector, bound);
  return worst_exact <= bound && worst_vector <= 2 * bound;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string scenario = argc > 1 ? argv[1] : "";
  float buffer[16 * 16] = {};
  if (scenario == "product") {
    std::mt19937 rng(7);
    bool ok = true;
    for (int rows : {16, 7, 1})
      for (int pairs : {16, 10, 1}) ok = CheckProduct(rows, pairs, &rng) && ok;
    return ok ? 0 : 1;
  }
  if (scenario == "unconfigured") {
    _tile_loadd(0, buffer, 64);
  } else if (scenario == "released") {
    Configure(Uniform(16, 64));
    _tile_release();
    _tile_loadd(0, buffer, 64);
  } else if (scenario == "shapes") {
    Config config = Uniform(16, 64);
    config.rows[2] = 8;  // B: 8 rows, where A's 64 bytes a row ask for 16
    Configure(config);
    _tile_dpbf16ps(0, 1, 2);
  } else if (scenario == "aliased") {
    Configure(Uniform(16, 64));
    _tile_dpbf16ps(0, 0, 1);
  } else if (scenario == "reserved") {
    Config config = Uniform(16, 64);
    config.reserved[3] = 1;
    Configure(config);
  } else if (scenario == "rows") {
    Config config = Uniform(16, 64);
    config.rows[5] = 17;
    Configure(config);
  } else {
    std::fprintf(stderr, "unknown scenario '%s'\n", scenario.c_str());
    return 2;
  }
  std::printf("no fault\n");
  return 0;
}
