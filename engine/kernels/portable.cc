// Plain C++ kernels: the fallback for any CPU, and the reference the SIMD sets are tested
// against. Loops are written so that GCC and Clang vectorize them without reassociating anything
// (8 independent partial sums, branch-free half widening): vectorizing then changes speed only,
// never the bits.
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "engine/kernels/kernel_sets.h"
#include "engine/kernels/kernels.h"

namespace dgpt {
namespace kernels {

uint16_t Q8ScaleBits(float amax) {
  return FloatToHalf(std::min(amax / 127.0f, 65504.0f));
}

namespace {

constexpr int kLanes = 8;  // partial sums per row

// HalfToFloat without branches on the value, so loops of it vectorize: the half's exponent and
// mantissa bits, shifted into a float's, are exactly 2^-112 times the value (subnormals included),
// and the multiplication by 2^112 is exact. Infinity and NaN keep their payload.
inline float WidenHalf(uint16_t bits) {
  const uint32_t sign = static_cast<uint32_t>(bits & 0x8000) << 16;
  const uint32_t magnitude = bits & 0x7fff;
  const float scaled = std::bit_cast<float>(magnitude << 13) * 0x1p112f;
  const uint32_t finite = std::bit_cast<uint32_t>(scaled);
  const uint32_t special = 0x7f800000u | ((magnitude & 0x3ff) << 13);
  // A mask rather than ?:, which GCC does not if-convert in the dot product's loop.
  const uint32_t is_special = 0u - static_cast<uint32_t>(magnitude >= 0x7c00);
  return std::bit_cast<float>(sign | (special & is_special) | (finite & ~is_special));
}

inline float Widen(float value) {
  return value;
}
inline float Widen(uint16_t bits) {
  return WidenHalf(bits);
}

// The one per-row sum: lane j takes columns j, j + 8, ..., then the lanes are added as a fixed
// tree.
template <typename T>
float DotRow(const T* w, const float* x, int64_t cols) {
  float sums[kLanes] = {};
  int64_t c = 0;
  for (; c + kLanes <= cols; c += kLanes) {
    for (int j = 0; j < kLanes; ++j) sums[j] += Widen(w[c + j]) * x[c + j];
  }
  for (int j = 0; c + j < cols; ++j) sums[j] += Widen(w[c + j]) * x[c + j];
  return ((sums[0] + sums[4]) + (sums[1] + sums[5])) + ((sums[2] + sums[6]) + (sums[3] + sums[7]));
}

void GemvF32(float* y, const float* w, const float* x, int64_t cols, int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; ++r) y[r] = DotRow(w + r * cols, x, cols);
}

void GemvF16(float* y, const uint16_t* w, const float* x, int64_t cols, int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; ++r) y[r] = DotRow(w + r * cols, x, cols);
}

// Exact, so it is the same number in every set whichever way the products are grouped.
int32_t DotBlock(const BlockQ8_0& w, const BlockQ8_0& x) {
  int32_t sum = 0;
  for (int i = 0; i < kQ8BlockSize; ++i) sum += int32_t{w.q[i]} * int32_t{x.q[i]};
  return sum;
}

void GemvQ8_0(float* y, const BlockQ8_0* w, const BlockQ8_0* x, int64_t cols, int64_t r0,
              int64_t r1) {
  const int64_t blocks = cols / kQ8BlockSize;
  const auto block_term = [](const BlockQ8_0& wb, const BlockQ8_0& xb) {
    return static_cast<float>(DotBlock(wb, xb)) * (WidenHalf(wb.scale) * WidenHalf(xb.scale));
  };
  for (int64_t r = r0; r < r1; ++r) {
    const BlockQ8_0* row = w + r * blocks;
    // Two sums (even and odd blocks) so consecutive blocks do not wait on each other.
    float even = 0.0f, odd = 0.0f;
    int64_t b = 0;
    for (; b + 2 <= blocks; b += 2) {
      even += block_term(row[b], x[b]);
      odd += block_term(row[b + 1], x[b + 1]);
    }
    if (b < blocks) even += block_term(row[b], x[b]);
    y[r] = even + odd;
  }
}

void QuantizeQ8_0(BlockQ8_0* out, const float* x, int64_t n) {
  // Adding and subtracting 1.5 * 2^23 rounds any |v| < 2^22 to an integer, to nearest even
  // (the default rounding mode, as nearbyint would); unlike a call to nearbyint, it vectorizes.
  constexpr float kRounder = 0x1.8p23f;
  for (int64_t b = 0; b < n / kQ8BlockSize; ++b) {
    const float* block = x + b * kQ8BlockSize;
    float amax = 0.0f;
    for (int i = 0; i < kQ8BlockSize; ++i) amax = std::max(amax, std::fabs(block[i]));
    const uint16_t scale = Q8ScaleBits(amax);
    const float d = HalfToFloat(scale);
    out[b].scale = scale;
    if (d == 0.0f) {
      std::memset(out[b].q, 0, sizeof(out[b].q));
      continue;
    }
    for (int i = 0; i < kQ8BlockSize; ++i) {
      // Clamping before rounding gives the same integer as after: the bounds are integers.
      const float v = std::clamp(block[i] / d, -127.0f, 127.0f);
      out[b].q[i] = static_cast<int8_t>((v + kRounder) - kRounder);
    }
  }
}

void ToF32F16(float* out, const uint16_t* w, int64_t cols, int64_t r0, int64_t r1) {
  const uint16_t* in = w + r0 * cols;
  const int64_t n = (r1 - r0) * cols;
  for (int64_t i = 0; i < n; ++i) out[i] = WidenHalf(in[i]);
}

void ToF32Q8_0(float* out, const BlockQ8_0* w, int64_t cols, int64_t r0, int64_t r1) {
  const int64_t blocks = (r1 - r0) * (cols / kQ8BlockSize);
  const BlockQ8_0* in = w + r0 * (cols / kQ8BlockSize);
  for (int64_t b = 0; b < blocks; ++b) {
    const float d = HalfToFloat(in[b].scale);
    for (int i = 0; i < kQ8BlockSize; ++i) out[b * kQ8BlockSize + i] = d * in[b].q[i];
  }
}

}  // namespace

const KernelSet kPortable = {
    .name = "portable",
    .gemv_f32 = GemvF32,
    .gemv_f16 = GemvF16,
    .gemv_q8_0 = GemvQ8_0,
    .quantize_q8_0 = QuantizeQ8_0,
    .to_f32_f16 = ToF32F16,
    .to_f32_q8_0 = ToF32Q8_0,
};

}  // namespace kernels
}  // namespace dgpt
