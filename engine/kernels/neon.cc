// NEON kernels for aarch64 (any ARMv8-A: Raspberry Pi 3 / 4 / 5, Graviton, Apple silicon).
// Half floats are widened with fcvtl; the q8_0 product uses vmull_s8 + pairwise adds here, and
// sdot (neon_dotprod.cc) on CPUs that have it. One row at a time, as in avx2.cc (which says why).
#include <arm_neon.h>

#include <cstring>

#include "engine/kernels/kernel_sets.h"
#include "engine/kernels/kernels.h"
#include "engine/kernels/neon_q8.h"

namespace dgpt {
namespace kernels {
namespace {

constexpr int kWidth = 4;         // floats per vector
constexpr int kAccumulators = 4;  // independent FMA chains per row, to cover the FMA latency

inline float32x4_t Load4(const float* p) {
  return vld1q_f32(p);
}
inline float32x4_t Load4(const uint16_t* p) {
  return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(p)));
}

// The first n (0 < n < 4) values, zeros after.
template <typename T>
inline float32x4_t LoadPartial(const T* p, int64_t n) {
  T padded[kWidth] = {};
  std::memcpy(padded, p, n * sizeof(T));
  return Load4(padded);
}

// dot(w[0:cols], x[0:cols]): accumulator a takes columns [16k + 4a, 16k + 4a + 4), leftover full
// vectors go to accumulator 0, a partial one to accumulator 1.
template <typename T>
float DotRow(const T* w, const float* x, int64_t cols) {
  float32x4_t acc[kAccumulators];
  for (int a = 0; a < kAccumulators; ++a) acc[a] = vdupq_n_f32(0.0f);
  int64_t c = 0;
  for (; c + kAccumulators * kWidth <= cols; c += kAccumulators * kWidth) {
    for (int a = 0; a < kAccumulators; ++a) {
      acc[a] = vfmaq_f32(acc[a], Load4(w + c + a * kWidth), Load4(x + c + a * kWidth));
    }
  }
  for (; c + kWidth <= cols; c += kWidth) acc[0] = vfmaq_f32(acc[0], Load4(w + c), Load4(x + c));
  if (c < cols) {
    acc[1] = vfmaq_f32(acc[1], LoadPartial(w + c, cols - c), LoadPartial(x + c, cols - c));
  }
  return vaddvq_f32(vaddq_f32(vaddq_f32(acc[0], acc[1]), vaddq_f32(acc[2], acc[3])));
}

void GemvF32(float* y, const float* w, const float* x, int64_t cols, int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; ++r) y[r] = DotRow(w + r * cols, x, cols);
}

void GemvF16(float* y, const uint16_t* w, const float* x, int64_t cols, int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; ++r) y[r] = DotRow(w + r * cols, x, cols);
}

// Exact integer dot product of one block as 4 int32 lanes, lane i holding bytes 4i..4i+3 of both
// 16-byte halves (the grouping sdot makes). Products fit int16 (|w| <= 128, |x| <= 127), and so do
// sums of two.
void GemvQ8_0(float* y, const BlockQ8_0* w, const BlockQ8_0* x, int64_t cols, int64_t r0,
              int64_t r1) {
  GemvQ8_0Rows(y, w, x, cols, r0, r1, [](int8x16_t w0, int8x16_t w1, int8x16_t x0, int8x16_t x1) {
    const int16x8_t low =
        vpaddq_s16(vmull_s8(vget_low_s8(w0), vget_low_s8(x0)), vmull_high_s8(w0, x0));
    const int16x8_t high =
        vpaddq_s16(vmull_s8(vget_low_s8(w1), vget_low_s8(x1)), vmull_high_s8(w1, x1));
    return vpadalq_s16(vpaddlq_s16(low), high);
  });
}

void QuantizeQ8_0(BlockQ8_0* out, const float* x, int64_t n) {
  constexpr int kVectors = kQ8BlockSize / kWidth;
  const float32x4_t lo = vdupq_n_f32(-127.0f), hi = vdupq_n_f32(127.0f);
  for (int64_t b = 0; b < n / kQ8BlockSize; ++b) {
    float32x4_t v[kVectors];
    for (int i = 0; i < kVectors; ++i) v[i] = vld1q_f32(x + b * kQ8BlockSize + i * kWidth);
    float32x4_t m = vabsq_f32(v[0]);
    for (int i = 1; i < kVectors; ++i) m = vmaxq_f32(m, vabsq_f32(v[i]));
    const uint16_t scale = Q8ScaleBits(vmaxvq_f32(m));
    const float d = HalfToFloat(scale);
    out[b].scale = scale;
    if (d == 0.0f) {
      std::memset(out[b].q, 0, sizeof(out[b].q));
      continue;
    }
    const float32x4_t dv = vdupq_n_f32(d);
    for (int i = 0; i < kVectors; i += 2) {
      // fcvtns: round to nearest, ties to even.
      const int32x4_t q0 = vcvtnq_s32_f32(vminq_f32(vmaxq_f32(vdivq_f32(v[i], dv), lo), hi));
      const int32x4_t q1 = vcvtnq_s32_f32(vminq_f32(vmaxq_f32(vdivq_f32(v[i + 1], dv), lo), hi));
      const int16x8_t q16 = vcombine_s16(vmovn_s32(q0), vmovn_s32(q1));
      vst1_s8(out[b].q + i * kWidth, vmovn_s16(q16));
    }
  }
}

void ToF32F16(float* out, const uint16_t* w, int64_t cols, int64_t r0, int64_t r1) {
  const uint16_t* in = w + r0 * cols;
  const int64_t n = (r1 - r0) * cols;
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const float16x8_t h = vreinterpretq_f16_u16(vld1q_u16(in + i));
    vst1q_f32(out + i, vcvt_f32_f16(vget_low_f16(h)));
    vst1q_f32(out + i + 4, vcvt_high_f32_f16(h));
  }
  for (; i < n; ++i) out[i] = HardwareHalfToFloat(in[i]);
}

void ToF32Q8_0(float* out, const BlockQ8_0* w, int64_t cols, int64_t r0, int64_t r1) {
  const int64_t blocks = (r1 - r0) * (cols / kQ8BlockSize);
  const BlockQ8_0* in = w + r0 * (cols / kQ8BlockSize);
  for (int64_t b = 0; b < blocks; ++b) {
    const float d = HardwareHalfToFloat(in[b].scale);
    for (int i = 0; i < kQ8BlockSize; i += 8) {
      const int16x8_t q = vmovl_s8(vld1_s8(in[b].q + i));
      float* o = out + b * kQ8BlockSize + i;
      vst1q_f32(o, vmulq_n_f32(vcvtq_f32_s32(vmovl_s16(vget_low_s16(q))), d));
      vst1q_f32(o + 4, vmulq_n_f32(vcvtq_f32_s32(vmovl_high_s16(q)), d));
    }
  }
}

}  // namespace

const KernelSet kNeon = {
    .name = "neon",
    .gemv_f32 = GemvF32,
    .gemv_f16 = GemvF16,
    .gemv_q8_0 = GemvQ8_0,
    .quantize_q8_0 = QuantizeQ8_0,
    .to_f32_f16 = ToF32F16,
    .to_f32_q8_0 = ToF32Q8_0,
};

const KernelSet kNeonDotprod = {
    .name = "neon",
    .gemv_f32 = GemvF32,
    .gemv_f16 = GemvF16,
    .gemv_q8_0 = NeonDotprodGemvQ8_0,
    .quantize_q8_0 = QuantizeQ8_0,
    .to_f32_f16 = ToF32F16,
    .to_f32_q8_0 = ToF32Q8_0,
};

}  // namespace kernels
}  // namespace dgpt
