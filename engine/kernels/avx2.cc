// AVX2 + FMA + F16C kernels (Haswell and later, Zen). Compiled with -mavx2 -mfma -mf16c and
// called only after dispatch.cc has checked the CPU, so everything here stays in an anonymous
// namespace (see kernel_sets.h).
//
// One row at a time, from its first byte to its last: each row is one sequential stream, which
// the hardware prefetchers follow best. Computing four rows at once (sharing the loads of x, which
// sits in L1 anyway) is up to 15% faster when the matrix is in L3, but 1.5-2.5x slower when it
// streams from DRAM, as decode weights do (Zen 4, one thread, 768x3072 and 3072x768). And a row
// computed alone cannot depend on which range it belongs to.
#include <immintrin.h>

#include <cstring>

#include "engine/kernels/kernel_sets.h"
#include "engine/kernels/kernels.h"

namespace dgpt {
namespace kernels {
namespace {

constexpr int kWidth = 8;         // floats per vector
constexpr int kAccumulators = 4;  // independent FMA chains per row, to cover the FMA latency

inline float HorizontalSum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

inline __m256 Load8(const float* p) {
  return _mm256_loadu_ps(p);
}
inline __m256 Load8(const uint16_t* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}

// The first n (0 < n < 8) values, zeros after; reads nothing past p + n.
inline __m256 LoadPartial(const float* p, int64_t n) {
  static constexpr int32_t kMasks[2 * kWidth] = {-1, -1, -1, -1, -1, -1, -1, -1,
                                                 0,  0,  0,  0,  0,  0,  0,  0};
  const __m256i mask = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(kMasks + kWidth - n));
  return _mm256_maskload_ps(p, mask);
}
inline __m256 LoadPartial(const uint16_t* p, int64_t n) {
  uint16_t padded[kWidth] = {};
  std::memcpy(padded, p, n * sizeof(uint16_t));
  return Load8(padded);
}

// dot(w[0:cols], x[0:cols]): accumulator a takes columns [32k + 8a, 32k + 8a + 8), leftover full
// vectors go to accumulator 0, a partial one to accumulator 1.
template <typename T>
float DotRow(const T* w, const float* x, int64_t cols) {
  __m256 acc[kAccumulators];
  for (int a = 0; a < kAccumulators; ++a) acc[a] = _mm256_setzero_ps();
  int64_t c = 0;
  for (; c + kAccumulators * kWidth <= cols; c += kAccumulators * kWidth) {
    for (int a = 0; a < kAccumulators; ++a) {
      acc[a] = _mm256_fmadd_ps(Load8(w + c + a * kWidth), Load8(x + c + a * kWidth), acc[a]);
    }
  }
  for (; c + kWidth <= cols; c += kWidth) {
    acc[0] = _mm256_fmadd_ps(Load8(w + c), Load8(x + c), acc[0]);
  }
  if (c < cols) {
    acc[1] = _mm256_fmadd_ps(LoadPartial(w + c, cols - c), LoadPartial(x + c, cols - c), acc[1]);
  }
  return HorizontalSum(_mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3])));
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

// The exact integer dot product of a w block and an x block, as 8 int32 lanes. vpmaddubsw
// multiplies unsigned by signed bytes, so w's sign moves onto x: |w| * (x * sign(w)). |w| <= 128
// (as unsigned) and |x| <= 127, so the pairwise int16 sums cannot saturate.
inline __m256i BlockDot(__m256i wq, __m256i xq) {
  const __m256i pairs = _mm256_maddubs_epi16(_mm256_abs_epi8(wq), _mm256_sign_epi8(xq, wq));
  return _mm256_madd_epi16(pairs, _mm256_set1_epi16(1));
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
// values, so the same bits. (Preparing more of x, an aligned copy of its bytes, measured slower
// in dgpt bench, though faster on cache-resident weights.)
constexpr int64_t kMaxPrepared = 256;
enum class Prep { kNone, kWrite, kRead };  // convert each scale / and store it / read it

// One row, even blocks in one accumulator and odd ones in another, so consecutive blocks do not
// wait on each other's FMA.
template <Prep kPrep>
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
    acc[a] = AddScaled(acc[a], BlockDot(LoadQ(row[b]), LoadQ(x[b])), row[b], x_scale);
  };
  int64_t b = 0;
  for (; b + 2 <= blocks; b += 2) {
    add(0, b);
    add(1, b + 1);
  }
  if (b < blocks) add(0, b);
  return HorizontalSum(_mm256_add_ps(acc[0], acc[1]));
}

void GemvQ8_0(float* y, const BlockQ8_0* w, const BlockQ8_0* x, int64_t cols, int64_t r0,
              int64_t r1) {
  const int64_t blocks = cols / kQ8BlockSize;
  if (r0 >= r1) return;
  if (blocks > kMaxPrepared) {
    for (int64_t r = r0; r < r1; ++r)
      y[r] = DotRowQ8<Prep::kNone>(w + r * blocks, x, nullptr, blocks);
    return;
  }
  float x_scales[kMaxPrepared];
  y[r0] = DotRowQ8<Prep::kWrite>(w + r0 * blocks, x, x_scales, blocks);
  for (int64_t r = r0 + 1; r < r1; ++r) {
    y[r] = DotRowQ8<Prep::kRead>(w + r * blocks, x, x_scales, blocks);
  }
}

void QuantizeQ8_0(BlockQ8_0* out, const float* x, int64_t n) {
  const __m256 sign_bit = _mm256_set1_ps(-0.0f);
  const __m256 lo = _mm256_set1_ps(-127.0f), hi = _mm256_set1_ps(127.0f);
  for (int64_t b = 0; b < n / kQ8BlockSize; ++b) {
    __m256 v[4];
    for (int i = 0; i < 4; ++i) v[i] = _mm256_loadu_ps(x + b * kQ8BlockSize + i * kWidth);
    const __m256 m = _mm256_max_ps(
        _mm256_max_ps(_mm256_andnot_ps(sign_bit, v[0]), _mm256_andnot_ps(sign_bit, v[1])),
        _mm256_max_ps(_mm256_andnot_ps(sign_bit, v[2]), _mm256_andnot_ps(sign_bit, v[3])));
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
    const uint16_t scale = Q8ScaleBits(_mm_cvtss_f32(m4));
    const float d = HalfToFloat(scale);
    out[b].scale = scale;
    if (d == 0.0f) {
      std::memset(out[b].q, 0, sizeof(out[b].q));
      continue;
    }
    const __m256 dv = _mm256_set1_ps(d);
    __m256i q[4];
    for (int i = 0; i < 4; ++i) {
      const __m256 clamped = _mm256_min_ps(_mm256_max_ps(_mm256_div_ps(v[i], dv), lo), hi);
      q[i] = _mm256_cvtps_epi32(
          _mm256_round_ps(clamped, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    }
    // The packs work within 128-bit lanes, leaving the 4-byte groups in the order
    // q0[0:4] q1[0:4] q2[0:4] q3[0:4] q0[4:8] q1[4:8] q2[4:8] q3[4:8]; the permute restores it.
    const __m256i bytes =
        _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
    const __m256i ordered =
        _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out[b].q), ordered);
  }
}

void ToF32F16(float* out, const uint16_t* w, int64_t cols, int64_t r0, int64_t r1) {
  const uint16_t* in = w + r0 * cols;
  const int64_t n = (r1 - r0) * cols;
  int64_t i = 0;
  for (; i + kWidth <= n; i += kWidth) _mm256_storeu_ps(out + i, Load8(in + i));
  for (; i < n; ++i) out[i] = _cvtsh_ss(in[i]);
}

void ToF32Q8_0(float* out, const BlockQ8_0* w, int64_t cols, int64_t r0, int64_t r1) {
  const int64_t blocks = (r1 - r0) * (cols / kQ8BlockSize);
  const BlockQ8_0* in = w + r0 * (cols / kQ8BlockSize);
  for (int64_t b = 0; b < blocks; ++b) {
    const __m256 d = _mm256_set1_ps(ScaleOf(in[b]));
    for (int i = 0; i < 4; ++i) {
      const __m128i q8 = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(in[b].q + i * kWidth));
      const __m256 q = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q8));
      _mm256_storeu_ps(out + b * kQ8BlockSize + i * kWidth, _mm256_mul_ps(d, q));
    }
  }
}

}  // namespace

const KernelSet kAvx2 = {
    .name = "avx2",
    .gemv_f32 = GemvF32,
    .gemv_f16 = GemvF16,
    .gemv_q8_0 = GemvQ8_0,
    .quantize_q8_0 = QuantizeQ8_0,
    .to_f32_f16 = ToF32F16,
    .to_f32_q8_0 = ToF32Q8_0,
};

}  // namespace kernels
}  // namespace dgpt
