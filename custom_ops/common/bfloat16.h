// float32 <-> bfloat16 on raw bits (a bfloat16 is the upper half of a float32), TF-free, for the kernels that
// produce bfloat16 values one at a time (the checkpoint copy, layer norm).
#ifndef TFMODELS_COMMON_BFLOAT16_H_
#define TFMODELS_COMMON_BFLOAT16_H_

#include <cstdint>

namespace tfmodels {

// Rounded to nearest even; a NaN becomes the quiet NaN of its sign (its payload dropped), which is what
// TensorFlow's cast and ml_dtypes (numpy's bfloat16) give, so every path produces the same bits.
inline uint16_t RoundToBFloat16(uint32_t bits) {
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>(((bits >> 16) & 0x8000u) | 0x7fc0u);
  return static_cast<uint16_t>((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16);
}

inline uint32_t WidenBFloat16(uint16_t bits) { return static_cast<uint32_t>(bits) << 16; }

}  // namespace tfmodels

#endif  // TFMODELS_COMMON_BFLOAT16_H_
