// AVX-512 kernels (F + BW + VL, with FMA and F16C; q8_0 through VNNI's vpdpbusd when the CPU has
// it). Compiled with the matching -m flags and called only after dispatch.cc has checked the CPU,
// so everything here stays in an anonymous namespace (see kernel_sets.h).
//
// One row at a time, as in avx2.cc (which says why).

// GCC 12's AVX-512 intrinsics start from `__m512 __Y = __Y;` (_mm512_undefined_ps), which
// -W(maybe-)uninitialized reports once inlined (GCC bug 105593, fixed in 13).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop

#include <cstring>

#include "engine/kernels/kernel_sets.h"
#include "engine/kernels/kernels.h"

namespace dgpt {
namespace kernels {
namespace {

constexpr int kWidth = 16;        // floats per vector
constexpr int kAccumulators = 2;  // independent FMA chains per row (4 measured no faster)

inline float HorizontalSum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

inline float HorizontalSum(__m512 v) {
  return HorizontalSum(_mm256_add_ps(
      _mm512_castps512_ps256(v), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1))));
}

inline __m512 Load16(const float* p) {
  return _mm512_loadu_ps(p);
}
inline __m512 Load16(const uint16_t* p) {
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}

// The first n (0 < n < 16) values, zeros after; masked lanes are never read.
inline __mmask16 FirstLanes(int64_t n) {
  return static_cast<__mmask16>((1u << n) - 1);
}
inline __m512 LoadPartial(const float* p, int64_t n) {
  return _mm512_maskz_loadu_ps(FirstLanes(n), p);
}
inline __m512 LoadPartial(const uint16_t* p, int64_t n) {
  return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(FirstLanes(n), p));
}

// dot(w[0:cols], x[0:cols]): accumulator a takes columns [32k + 16a, 32k + 16a + 16), a leftover
// full vector goes to accumulator 0, a partial one to accumulator 1.
template <typename T>
float DotRow(const T* w, const float* x, int64_t cols) {
  __m512 acc[kAccumulators];
  for (int a = 0; a < kAccumulators; ++a) acc[a] = _mm512_setzero_ps();
  int64_t c = 0;
  for (; c + kAccumulators * kWidth <= cols; c += kAccumulators * kWidth) {
    for (int a = 0; a < kAccumulators; ++a) {
      acc[a] = _mm512_fmadd_ps(Load16(w + c + a * kWidth), Load16(x + c + a * kWidth), acc[a]);
    }
  }
  for (; c + kWidth <= cols; c += kWidth) {
    acc[0] = _mm512_fmadd_ps(Load16(w + c), Load16(x + c), acc[0]);
  }
  if (c < cols) {
    acc[1] = _mm512_fmadd_ps(LoadPartial(w + c, cols - c), LoadPartial(x + c, cols - c), acc[1]);
  }
  return HorizontalSum(_mm512_add_ps(acc[0], acc[1]));
}

void GemvF32(float* y, const float* w, const float* x, int64_t cols, int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; ++r) y[r] = DotRow(w + r * cols, x, cols);
}

// f16 in 256-bit vectors, 8 halves per vcvtph2ps, with 4 accumulators (as avx2.cc): accumulator
// a takes columns [32k + 8a, 32k + 8a + 8), a leftover full vector goes to accumulator 0, a
// partial one to accumulator 1. Measured 15% faster than 512-bit vectors in dgpt bench (decode,
// 1 thread, Zen 4), though 6% slower on cache-resident weights.
constexpr int kHalfWidth = 8;
constexpr int kHalfAccumulators = 4;

float DotRowF16(const uint16_t* w, const float* x, int64_t cols) {
  const auto load = [](const uint16_t* p) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  };
  __m256 acc[kHalfAccumulators];
  for (int a = 0; a < kHalfAccumulators; ++a) acc[a] = _mm256_setzero_ps();
  int64_t c = 0;
  for (; c + kHalfAccumulators * kHalfWidth <= cols; c += kHalfAccumulators * kHalfWidth) {
    for (int a = 0; a < kHalfAccumulators; ++a) {
      acc[a] = _mm256_fmadd_ps(load(w + c + a * kHalfWidth),
                               _mm256_loadu_ps(x + c + a * kHalfWidth), acc[a]);
    }
  }
  for (; c + kHalfWidth <= cols; c += kHalfWidth) {
    acc[0] = _mm256_fmadd_ps(load(w + c), _mm256_loadu_ps(x + c), acc[0]);
  }
  if (c < cols) {
    const __mmask8 mask = static_cast<__mmask8>((1u << (cols - c)) - 1);
    const __m256 wv = _mm256_cvtph_ps(_mm_maskz_loadu_epi16(mask, w + c));
    acc[1] = _mm256_fmadd_ps(wv, _mm256_maskz_loadu_ps(mask, x + c), acc[1]);
  }
  return HorizontalSum(_mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3])));
}

void GemvF16(float* y, const uint16_t* w, const float* x, int64_t cols, int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; ++r) y[r] = DotRowF16(w + r * cols, x, cols);
}

inline float ScaleOf(const BlockQ8_0& block) {
  return _cvtsh_ss(block.scale);
}
inline __m256i LoadQ(const BlockQ8_0& block) {
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(block.q));
}

// The exact integer dot product of a w block and an x block, as 8 int32 lanes: lane i holds
// bytes 4i..4i+3, through vpdpbusd or vpmaddubsw + vpmaddwd alike (same exact values, so the two
// variants agree bit for bit). Both multiply unsigned by signed bytes.
//   vpdpbusd: w + 128 (w xor 0x80) is unsigned, so it sums (w + 128) * x onto `bias`, which holds
//     -128 * (the lane's sum of x) (XBias, itself a vpdpbusd).
//   vpmaddubsw: w's sign moves onto x, |w| * (x * sign(w)); |w| <= 128 and |x| <= 127, so its
//     int16 pair sums cannot saturate (with w + 128 <= 255 they could). `bias` is unused.
template <bool kVnni>
inline __m256i BlockDot(__m256i wq, __m256i xq, __m256i bias) {
  if constexpr (kVnni) {
    return _mm256_dpbusd_epi32(bias, _mm256_xor_si256(wq, _mm256_set1_epi8(-128)), xq);
  } else {
    const __m256i pairs = _mm256_maddubs_epi16(_mm256_abs_epi8(wq), _mm256_sign_epi8(xq, wq));
    return _mm256_madd_epi16(pairs, _mm256_set1_epi16(1));
  }
}

template <bool kVnni>
inline __m256i XBias(__m256i xq) {
  if constexpr (kVnni) {
    const __m256i sums = _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_set1_epi8(-128), xq);
    return _mm256_sub_epi32(_mm256_setzero_si256(), sums);  // |sums| <= 4 * 128 * 127
  } else {
    return _mm256_setzero_si256();
  }
}

// acc + float(dot) * (w scale * x scale), the scale product rounded once, as a float. The w scale
// is widened straight from memory into all 8 lanes (vpbroadcastw + vcvtph2ps), which costs fewer
// operations than a scalar conversion and a broadcast.
inline __m256 AddScaled(__m256 acc, __m256i dot, const BlockQ8_0& w, __m256 x_scale) {
  const __m256 w_scale = _mm256_cvtph_ps(_mm_set1_epi16(static_cast<int16_t>(w.scale)));
  const __m256 scale = _mm256_mul_ps(w_scale, x_scale);
  return _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), scale, acc);
}

// x's scales as floats, converted once per call rather than once per row: by the first row,
// as it goes (so the work overlaps that row's loads from memory), for the others to read. Up to
// kMaxPrepared blocks (cols 8192); wider rows convert each scale as they go, which gives the same
// values, so the same bits. (Preparing more of x once per call, its vpdpbusd biases and an
// aligned copy of its bytes, was 25% faster on cache-resident weights but 5% slower in dgpt
// bench; so was replacing the in-loop bias with vpabsb + vpsignb.)
constexpr int64_t kMaxPrepared = 256;
enum class Prep { kNone, kWrite, kRead };  // convert each scale / and store it / read it

// One row, even blocks in one accumulator and odd ones in another. More accumulators measured no
// faster (the loop is bound by operation throughput, not FMA latency), nor did two blocks per
// 512-bit vector (Zen 4 splits 512-bit operations in two, and the scales need inserts).
template <bool kVnni, Prep kPrep>
inline float DotRowQ8(const BlockQ8_0* row, const BlockQ8_0* x, float* x_scales, int64_t blocks) {
  __m256 acc[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
  const auto add = [&](int a, int64_t b) {
    __m256 x_scale;
    if constexpr (kPrep == Prep::kRead) {
      x_scale = _mm256_broadcast_ss(x_scales + b);
    } else {
      const float scale = ScaleOf(x[b]);
      if constexpr (kPrep == Prep::kWrite) x_scales[b] = scale;
      x_scale = _mm256_set1_ps(scale);
    }
    const __m256i xq = LoadQ(x[b]);
    const __m256i dot = BlockDot<kVnni>(LoadQ(row[b]), xq, XBias<kVnni>(xq));
    acc[a] = AddScaled(acc[a], dot, row[b], x_scale);
  };
  int64_t b = 0;
  for (; b + 2 <= blocks; b += 2) {
    add(0, b);
    add(1, b + 1);
  }
  if (b < blocks) add(0, b);
  return HorizontalSum(_mm256_add_ps(acc[0], acc[1]));
}

template <bool kVnni>
void GemvQ8_0(float* y, const BlockQ8_0* w, const BlockQ8_0* x, int64_t cols, int64_t r0,
              int64_t r1) {
  const int64_t blocks = cols / kQ8BlockSize;
  if (r0 >= r1) return;
  if (blocks > kMaxPrepared) {
    for (int64_t r = r0; r < r1; ++r) {
      y[r] = DotRowQ8<kVnni, Prep::kNone>(w + r * blocks, x, nullptr, blocks);
    }
    return;
  }
  float x_scales[kMaxPrepared];
  y[r0] = DotRowQ8<kVnni, Prep::kWrite>(w + r0 * blocks, x, x_scales, blocks);
  for (int64_t r = r0 + 1; r < r1; ++r) {
    y[r] = DotRowQ8<kVnni, Prep::kRead>(w + r * blocks, x, x_scales, blocks);
  }
}

void QuantizeQ8_0(BlockQ8_0* out, const float* x, int64_t n) {
  const __m512 lo = _mm512_set1_ps(-127.0f), hi = _mm512_set1_ps(127.0f);
  for (int64_t b = 0; b < n / kQ8BlockSize; ++b) {
    const __m512 v[2] = {_mm512_loadu_ps(x + b * kQ8BlockSize),
                         _mm512_loadu_ps(x + b * kQ8BlockSize + kWidth)};
    const float amax =
        _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v[0]), _mm512_abs_ps(v[1])));
    const uint16_t scale = Q8ScaleBits(amax);
    const float d = HalfToFloat(scale);
    out[b].scale = scale;
    if (d == 0.0f) {
      std::memset(out[b].q, 0, sizeof(out[b].q));
      continue;
    }
    const __m512 dv = _mm512_set1_ps(d);
    for (int i = 0; i < 2; ++i) {
      const __m512 clamped = _mm512_min_ps(_mm512_max_ps(_mm512_div_ps(v[i], dv), lo), hi);
      const __m512i q = _mm512_cvtps_epi32(
          _mm512_roundscale_ps(clamped, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(out[b].q + i * kWidth), _mm512_cvtepi32_epi8(q));
    }
  }
}

void ToF32F16(float* out, const uint16_t* w, int64_t cols, int64_t r0, int64_t r1) {
  const uint16_t* in = w + r0 * cols;
  const int64_t n = (r1 - r0) * cols;
  int64_t i = 0;
  for (; i + kWidth <= n; i += kWidth) _mm512_storeu_ps(out + i, Load16(in + i));
  if (i < n) _mm512_mask_storeu_ps(out + i, FirstLanes(n - i), LoadPartial(in + i, n - i));
}

void ToF32Q8_0(float* out, const BlockQ8_0* w, int64_t cols, int64_t r0, int64_t r1) {
  const int64_t blocks = (r1 - r0) * (cols / kQ8BlockSize);
  const BlockQ8_0* in = w + r0 * (cols / kQ8BlockSize);
  for (int64_t b = 0; b < blocks; ++b) {
    const __m512 d = _mm512_set1_ps(ScaleOf(in[b]));
    for (int i = 0; i < 2; ++i) {
      const __m128i q8 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(in[b].q + i * kWidth));
      const __m512 q = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q8));
      _mm512_storeu_ps(out + b * kQ8BlockSize + i * kWidth, _mm512_mul_ps(d, q));
    }
  }
}

}  // namespace

const KernelSet kAvx512 = {
    .name = "avx512",
    .gemv_f32 = GemvF32,
    .gemv_f16 = GemvF16,
    .gemv_q8_0 = GemvQ8_0<false>,
    .quantize_q8_0 = QuantizeQ8_0,
    .to_f32_f16 = ToF32F16,
    .to_f32_q8_0 = ToF32Q8_0,
};

const KernelSet kAvx512Vnni = {
    .name = "avx512",
    .gemv_f32 = GemvF32,
    .gemv_f16 = GemvF16,
    .gemv_q8_0 = GemvQ8_0<true>,
    .quantize_q8_0 = QuantizeQ8_0,
    .to_f32_f16 = ToF32F16,
    .to_f32_q8_0 = ToF32Q8_0,
};

}  // namespace kernels
}  // namespace dgpt
