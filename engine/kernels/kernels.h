// The decode hot path: matrix-vector products over weights in three formats, one
// implementation per instruction set (portable C++, AVX2+FMA+F16C, AVX-512, NEON), chosen once
// at run time for the CPU. A weight matrix here is always stored one output per row:
// W[rows, cols], y[r] = dot(W[r, :], x) — the reduction runs along contiguous memory, which is
// what q8_0's blocks and integer dot products need.
//
// Determinism contract (what the pipeline's bit-identity rests on): for a given kernel set, each
// y[r] is computed by the same sequence of operations whatever [r0, r1) range it falls in, so
// splitting rows over threads or batching never changes a result. Different kernel sets may
// round differently (tests compare them with a tolerance), except quantize_q8_0, to_f32_f16 and
// to_f32_q8_0, which are bit-identical across all of them. The kernel files are compiled with
// -ffp-contract=off, so portable gives the same bits on every architecture.
//
// Pointers need only their type's natural alignment (float 4 bytes, uint16_t and BlockQ8_0 2):
// the SIMD paths use unaligned loads and stores throughout.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "base/half.h"  // the scalar reference for f16 weights and q8_0 scales

namespace dgpt {

// How a weight matrix is stored in memory.
enum class WeightFormat : uint8_t {
  kF32,   // float
  kF16,   // IEEE half, widened in the kernel
  kQ8_0,  // blocks of 32 int8 with one f16 scale (ggml's q8_0 layout), cols % 32 == 0
};

inline constexpr int kQ8BlockSize = 32;

// One q8_0 block: value[i] = scale * q[i]. 34 bytes, no padding, so blocks pack back to back.
struct BlockQ8_0 {
  uint16_t scale;  // IEEE half
  int8_t q[kQ8BlockSize];
};
static_assert(sizeof(BlockQ8_0) == 34);

// Bytes one row of `cols` weights takes in `format` (q8_0: cols / 32 blocks).
int64_t WeightRowBytes(WeightFormat format, int64_t cols);
std::string_view WeightFormatName(WeightFormat format);  // "f32", "f16", "q8_0"
// Parses "f32" / "f16" / "q8_0" (also "fp32", "fp16", "q8"); false when unknown.
bool ParseWeightFormat(std::string_view name, WeightFormat* format);

struct KernelSet {
  std::string_view name;  // "portable", "avx2", "avx512", "neon"

  // y[r] = dot(w[r, 0:cols], x[0:cols]) for r in [r0, r1). w points at row 0.
  void (*gemv_f32)(float* y, const float* w, const float* x, int64_t cols, int64_t r0, int64_t r1);
  void (*gemv_f16)(float* y, const uint16_t* w, const float* x, int64_t cols, int64_t r0,
                   int64_t r1);
  // x must first be quantized with quantize_q8_0 (cols / 32 blocks): integer dot products per
  // block (exact in int32), times HalfToFloat(w scale) * HalfToFloat(x scale), summed in float.
  // x's q must lie in [-127, 127], as quantize_q8_0 makes them; w's may also be -128.
  void (*gemv_q8_0)(float* y, const BlockQ8_0* w, const BlockQ8_0* x, int64_t cols, int64_t r0,
                    int64_t r1);

  // out[n / 32] = q8_0 of x[n] (n % 32 == 0). Exactly, per block, in float arithmetic:
  //   amax  = max |x[i]|
  //   scale = FloatToHalf(min(amax / 127.0f, 65504.0f))   (stored; never infinity)
  //   d     = HalfToFloat(scale)                          (the scale the dot products use)
  //   q[i]  = d == 0 ? 0 : clamp(round-to-nearest-even(x[i] / d), -127, 127)
  // x / d is a true IEEE division (not x * (1 / d)); the clamp matters only when rounding the
  // scale to f16 made it smaller (or subnormal). Bit-identical across kernel sets for finite x.
  void (*quantize_q8_0)(BlockQ8_0* out, const float* x, int64_t n);

  // Widen rows [r0, r1) of a stored matrix to float: out[(r - r0) * cols + c]. Used by prefill,
  // which multiplies tiles of widened rows with sgemm. Exact for f16 (equal to HalfToFloat, NaNs
  // included: both quiet them); q8_0 gives HalfToFloat(scale) * q, also exact.
  void (*to_f32_f16)(float* out, const uint16_t* w, int64_t cols, int64_t r0, int64_t r1);
  void (*to_f32_q8_0)(float* out, const BlockQ8_0* w, int64_t cols, int64_t r0, int64_t r1);
};

// The best kernel set this CPU supports (checked once: cpuid on x86-64, HWCAP on aarch64).
// DGPT_KERNELS=portable|avx2|avx512|neon in the environment forces one (if supported), for
// comparisons and for benchmarks.
const KernelSet& ActiveKernels();
// Every kernel set compiled in that this CPU can run, portable first.
std::vector<const KernelSet*> AvailableKernels();

}  // namespace dgpt
