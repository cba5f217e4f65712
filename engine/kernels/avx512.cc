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

void GemvF16(float* y, const uint16_t* w, const float* x, int64_t cols, int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; ++r) y[r] = DotRow(w + r * cols, x, cols);
}

inline float ScaleOf(const BlockQ8_0& block) {
  return _cvtsh_ss(block.scale);
}
inline __m256i LoadQ(const BlockQ8_0& block) {
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(block.q));
}

// acc + (exact integer dot product of the blocks, as 8 int32 lanes) * both scales. Lane i holds
// bytes 4i..4i+3 through vpdpbusd or vpmaddubsw + vpmaddwd alike (same exact values, so the two
// variants agree bit for bit). Both multiply unsigned by signed bytes, so w's sign moves onto x:
// |w| * (x * sign(w)); |w| <= 128 and |x| <= 127, so vpmaddubsw's int16 sums cannot saturate.
//
// One block per 256-bit vector: two blocks per 512-bit vector measured 20% slower on Zen 4 (which
// splits 512-bit operations in two), for the extra inserts and blends of scales.
template <bool kVnni>
inline __m256 AddBlock(__m256 acc, const BlockQ8_0& w, const BlockQ8_0& x) {
  const __m256i wq = LoadQ(w);
  const __m256i w_abs = _mm256_abs_epi8(wq);
  const __m256i x_signed = _mm256_sign_epi8(LoadQ(x), wq);
  __m256i dot;
  if constexpr (kVnni) {
    dot = _mm256_dpbusd_epi32(_mm256_setzero_si256(), w_abs, x_signed);
  } else {
    dot = _mm256_madd_epi16(_mm256_maddubs_epi16(w_abs, x_signed), _mm256_set1_epi16(1));
  }
  return _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), _mm256_set1_ps(ScaleOf(w) * ScaleOf(x)), acc);
}

// Even blocks in one accumulator, odd ones in another, so consecutive blocks do not wait on
// each other's FMA.
template <bool kVnni>
void GemvQ8_0(float* y, const BlockQ8_0* w, const BlockQ8_0* x, int64_t cols, int64_t r0,
              int64_t r1) {
  const int64_t blocks = cols / kQ8BlockSize;
  for (int64_t r = r0; r < r1; ++r) {
    const BlockQ8_0* row = w + r * blocks;
    __m256 even = _mm256_setzero_ps(), odd = _mm256_setzero_ps();
    int64_t b = 0;
    for (; b + 2 <= blocks; b += 2) {
      even = AddBlock<kVnni>(even, row[b], x[b]);
      odd = AddBlock<kVnni>(odd, row[b + 1], x[b + 1]);
    }
    if (b < blocks) even = AddBlock<kVnni>(even, row[b], x[b]);
    y[r] = HorizontalSum(_mm256_add_ps(even, odd));
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
