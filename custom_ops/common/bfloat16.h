// float32 <-> bfloat16 on raw bits (a bfloat16 is the upper half of a float32), TF-free, for the kernels that
// produce bfloat16 values one at a time (the checkpoint copy, layer norm, the dense epilogue).
#ifndef TFMODELS_COMMON_BFLOAT16_H_
#define TFMODELS_COMMON_BFLOAT16_H_

#include <cstdint>
#include <cstring>

namespace tfmodels {

// Rounded to nearest even; a NaN becomes the quiet NaN of its sign (its payload dropped), which is what
// TensorFlow's cast and ml_dtypes (numpy's bfloat16) give, so every path produces the same bits.
inline uint16_t RoundToBFloat16(uint32_t bits) {
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>(((bits >> 16) & 0x8000u) | 0x7fc0u);
  return static_cast<uint16_t>((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16);
}

inline uint32_t WidenBFloat16(uint16_t bits) { return static_cast<uint32_t>(bits) << 16; }

inline float BitsToFloat(uint32_t bits) {
  float value;
  std::memcpy(&value, &bits, sizeof(value));
  return value;
}

inline uint32_t FloatToBits(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof(bits));
  return bits;
}

// A bfloat16 (its bits) as float32, and a float32 rounded to bfloat16 bits, for kernels computing in float32.
inline float BFloat16ToFloat(uint16_t bits) { return BitsToFloat(WidenBFloat16(bits)); }
inline uint16_t FloatToBFloat16(float value) { return RoundToBFloat16(FloatToBits(value)); }

}  // namespace tfmodels

#endif  // TFMODELS_COMMON_BFLOAT16_H_
