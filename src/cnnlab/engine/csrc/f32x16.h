// 16 float32 lanes at a time, for cnnlab's C++ kernels (blocks.cpp, speedrun.cpp).
#pragma once

#include <cstdint>
#include <cstring>

namespace cnnlab {

// 16 float32 lanes (one AVX-512 register, or two AVX ones): 16 channels of a pixel in a
// channels-last map (a partial last group through loadn/storen). GCC/Clang vector extensions: +, *, ?: and the
// comparisons work lane by lane, in IEEE float32 like the scalar code.
typedef float f32x16 __attribute__((vector_size(64)));
// 16 int32 lanes (a pooling window's positions, one per channel, as the comparisons give)
typedef int32_t i32x16 __attribute__((vector_size(64)));
// 16 uint8 lanes: the positions as they are stored
typedef uint8_t u8x16 __attribute__((vector_size(16)));

inline f32x16 load16(const float* p) {
  f32x16 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline void store16(float* p, f32x16 v) { std::memcpy(p, &v, sizeof v); }
inline i32x16 load_arg(const uint8_t* p) {
  u8x16 v;
  std::memcpy(&v, p, sizeof v);
  return __builtin_convertvector(v, i32x16);
}
inline void store_arg(uint8_t* p, i32x16 v) {
  const u8x16 b = __builtin_convertvector(v, u8x16);
  std::memcpy(p, &b, sizeof b);
}
// The first n (1..16) lanes of a row whose length is not a multiple of 16; the rest zero.
inline f32x16 loadn(const float* p, int n) {
  f32x16 v{};
  std::memcpy(&v, p, sizeof(float) * n);
  return v;
}
inline void storen(float* p, f32x16 v, int n) { std::memcpy(p, &v, sizeof(float) * n); }
inline i32x16 load_argn(const uint8_t* p, int n) {
  u8x16 v{};
  std::memcpy(&v, p, n);
  return __builtin_convertvector(v, i32x16);
}
inline void store_argn(uint8_t* p, i32x16 v, int n) {
  const u8x16 b = __builtin_convertvector(v, u8x16);
  std::memcpy(p, &b, n);
}
// Full: every group has 16 lanes (the channel count is a multiple of 16), so the plain
// loads and stores; else n lanes. (A run-time choice in the inner loops costs a third.)
template <bool Full>
inline f32x16 ld(const float* p, int n) {
  if constexpr (Full) return load16(p);
  return loadn(p, n);
}
template <bool Full>
inline void st(float* p, f32x16 v, int n) {
  if constexpr (Full) return store16(p, v);
  storen(p, v, n);
}
template <bool Full>
inline i32x16 ld_arg(const uint8_t* p, int n) {
  if constexpr (Full) return load_arg(p);
  return load_argn(p, n);
}
template <bool Full>
inline void st_arg(uint8_t* p, i32x16 v, int n) {
  if constexpr (Full) return store_arg(p, v);
  store_argn(p, v, n);
}
inline f32x16 relu16(f32x16 v) { return v < 0.0f ? f32x16{} : v; }

// Pools 16 channels over the four positions of a 2x2 window: best is the first maximum in
// PyTorch's scan order (strict >, NaN wins), arg its position 0..3 (row-major).
inline void pool_take(f32x16 v, int d, f32x16& best, i32x16& arg) {
  const i32x16 take = (v > best) | (v != v);
  best = take ? v : best;
  arg = take ? i32x16{} + d : arg;
}

}  // namespace cnnlab
