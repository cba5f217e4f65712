#include "engine/ops.h"

#include <cblas.h>

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <vector>

namespace dgpt {

void SetBlasThreads(int num_threads) {
  openblas_set_num_threads(std::max(1, num_threads));
}

void layernorm_forward(float* out, const float* in, const float* weight, const float* bias, int T,
                       int C, float eps) {
  Eigen::Map<const Eigen::ArrayXf> w(weight, C), b(bias, C);
  for (int t = 0; t < T; ++t) {
    Eigen::Map<const Eigen::ArrayXf> x(in + static_cast<int64_t>(t) * C, C);
    Eigen::Map<Eigen::ArrayXf> y(out + static_cast<int64_t>(t) * C, C);
    const float mean = x.mean();
    const float variance = (x - mean).square().mean();  // biased, as in the paper
    const float rstd = 1.0f / std::sqrt(variance + eps);
    y = (x - mean) * rstd * w + b;
  }
}

namespace {

// Dot product with eight independent partial sums, so the compiler can vectorize it.
float dot(const float* __restrict a, const float* __restrict b, int n) {
  float partial[8] = {};
  int i = 0;
  for (; i + 8 <= n; i += 8) {
    for (int k = 0; k < 8; ++k) partial[k] += a[i + k] * b[i + k];
  }
  float sum = ((partial[0] + partial[1]) + (partial[2] + partial[3])) +
              ((partial[4] + partial[5]) + (partial[6] + partial[7]));
  for (; i < n; ++i) sum += a[i] * b[i];
  return sum;
}

// Below this many rows the batched GEMV beats widening weights for sgemm: it reads each weight
// once from memory and keeps it in cache for the other rows.
constexpr int kMinRowsForSgemm = 8;
// Rows of a narrow-format matrix widened per sgemm call: about 2 MB of floats, so the scratch
// stays small next to the weights.
constexpr int64_t kWidenTileBytes = 2 << 20;

// The GEMV for rows [r0, r1) of w, in w's format. `xq` is x quantized when w is q8_0.
void gemv_rows(float* y, const WeightMatrix& w, const float* x, const BlockQ8_0* xq, int64_t r0,
               int64_t r1) {
  const KernelSet& k = ActiveKernels();
  switch (w.format) {
    case WeightFormat::kF32:
      k.gemv_f32(y, reinterpret_cast<const float*>(w.data), x, w.cols, r0, r1);
      return;
    case WeightFormat::kF16:
      k.gemv_f16(y, reinterpret_cast<const uint16_t*>(w.data), x, w.cols, r0, r1);
      return;
    case WeightFormat::kQ8_0:
      k.gemv_q8_0(y, reinterpret_cast<const BlockQ8_0*>(w.data), xq, w.cols, r0, r1);
      return;
  }
}

// in[B, IN] quantized row by row (only for q8_0 weights; empty otherwise).
const BlockQ8_0* QuantizeInputs(const WeightMatrix& w, const float* in, int B) {
  if (w.format != WeightFormat::kQ8_0) return nullptr;
  thread_local std::vector<BlockQ8_0> quantized;
  const int64_t blocks = w.cols / kQ8BlockSize;
  quantized.resize(static_cast<size_t>(B * blocks));
  for (int b = 0; b < B; ++b) {
    ActiveKernels().quantize_q8_0(quantized.data() + b * blocks, in + b * w.cols, w.cols);
  }
  return quantized.data();
}

void sgemm_bias(float* out, const float* in, const float* weight, int64_t ldw, const float* bias,
                int T, int64_t IN, int64_t cols_out, int64_t ldo) {
  for (int t = 0; t < T; ++t) {
    float* row = out + t * ldo;
    if (bias) {
      std::copy(bias, bias + cols_out, row);
    } else {
      std::fill(row, row + cols_out, 0.0f);
    }
  }
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, static_cast<int>(cols_out),
              static_cast<int>(IN), 1.0f, in, static_cast<int>(IN), weight, static_cast<int>(ldw),
              1.0f, out, static_cast<int>(ldo));
}

}  // namespace

void matmul_forward(float* out, const float* in, const WeightMatrix& w, const float* bias, int T,
                    ThreadPool& pool) {
  if (T < kMinRowsForSgemm) {
    matmul_rows_forward(out, in, w, bias, T, pool);
    return;
  }
  if (w.format == WeightFormat::kF32) {
    sgemm_bias(out, in, reinterpret_cast<const float*>(w.data), w.cols, bias, T, w.cols, w.rows,
               w.rows);
    return;
  }
  if (w.format == WeightFormat::kQ8_0) {
    // q8_0 quantizes its input on every path, so prefill computes the same function as decode
    // (which takes integer dot products): sgemm gets the inputs quantized and widened back.
    const BlockQ8_0* quantized = QuantizeInputs(w, in, T);
    thread_local std::vector<float> widened_input;
    widened_input.resize(static_cast<size_t>(T) * w.cols);
    ActiveKernels().to_f32_q8_0(widened_input.data(), quantized, w.cols, 0, T);
    in = widened_input.data();
  }
  const int64_t tile_rows = std::max<int64_t>(16, kWidenTileBytes / (w.cols * 4) / 16 * 16);
  // The caller's buffer; pool threads write into it through `tile` (their own thread_local
  // copies would be other, empty vectors).
  thread_local std::vector<float> widened;
  widened.resize(static_cast<size_t>(std::min(tile_rows, w.rows) * w.cols));
  float* tile = widened.data();
  for (int64_t r0 = 0; r0 < w.rows; r0 += tile_rows) {
    const int64_t r1 = std::min(w.rows, r0 + tile_rows);
    pool.ParallelFor(r1 - r0, 1, [&](int64_t a, int64_t b) {
      for (int64_t r = r0 + a; r < r0 + b; ++r) WeightRowToFloat(tile + (r - r0) * w.cols, w, r);
    });
    sgemm_bias(out + r0, in, tile, w.cols, bias ? bias + r0 : nullptr, T, w.cols, r1 - r0, w.rows);
  }
}

void matmul_rows_forward(float* out, const float* in, const WeightMatrix& w, const float* bias,
                         int B, ThreadPool& pool) {
  const BlockQ8_0* quantized = QuantizeInputs(w, in, B);
  const int64_t blocks = w.cols / kQ8BlockSize;
  pool.ParallelFor(w.rows, 16, [&](int64_t r0, int64_t r1) {
    // A few rows at a time for every input, so those weight rows are still in L1/L2 when the
    // next input needs them.
    constexpr int64_t kRowsPerPass = 16;
    for (int64_t p0 = r0; p0 < r1; p0 += kRowsPerPass) {
      const int64_t p1 = std::min(r1, p0 + kRowsPerPass);
      for (int b = 0; b < B; ++b) {
        float* y = out + b * w.rows;
        gemv_rows(y, w, in + b * w.cols, quantized ? quantized + b * blocks : nullptr, p0, p1);
        if (bias) {
          for (int64_t r = p0; r < p1; ++r) y[r] += bias[r];
        }
      }
    }
  });
}

void gelu_forward(float* x, int64_t N, Activation activation) {
  if (activation == Activation::kGeluErf) {
    for (int64_t i = 0; i < N; ++i) x[i] = 0.5f * x[i] * (1.0f + std::erf(x[i] * float(M_SQRT1_2)));
    return;
  }
  // Eigen's vectorized tanh (a rational approximation within a few ulp): a 128-token prefill
  // of GPT-2 (124M) evaluates 4.7 M of them, which libm's scalar tanhf makes a visible share.
  const float kSqrt2OverPi = 0.7978845608028654f;
  Eigen::Map<Eigen::ArrayXf> v(x, N);
  v = 0.5f * v * (1.0f + (kSqrt2OverPi * (v + 0.044715f * v.cube())).tanh());
}

void residual_forward(float* x, const float* y, int64_t N) {
  Eigen::Map<Eigen::ArrayXf>(x, N) += Eigen::Map<const Eigen::ArrayXf>(y, N);
}

void softmax_forward(float* x, int N) {
  // Subtracting the max only keeps exp() from overflowing; the result is unchanged.
  const float max_value = *std::max_element(x, x + N);
  float sum = 0.0f;
  for (int i = 0; i < N; ++i) {
    x[i] = std::exp(x[i] - max_value);
    sum += x[i];
  }
  const float inverse = 1.0f / sum;
  for (int i = 0; i < N; ++i) x[i] *= inverse;
}

namespace {

// Decode spends a fifth of its time here at a few hundred positions, and this file is built for
// the baseline ISA: on x86-64 the compiler makes AVX-512 and AVX2+FMA copies of this function
// too and the loader picks one for the CPU (a machine always uses the same one, so results stay
// reproducible there).
#if defined(__x86_64__) && !defined(__clang__)
__attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#endif
void AttendOneHead(float* y, const float* q, const float* keys, const float* values,
                   int positions, int C, int HD, float scale, float* scores) {
  // keys / values: this head's slice of row 0 of the caches [S, C]; row s is s * C further.
  for (int s = 0; s < positions; ++s) {
    scores[s] = dot(q, keys + static_cast<int64_t>(s) * C, HD) * scale;
  }
  softmax_forward(scores, positions);
  std::fill(y, y + HD, 0.0f);
  for (int s = 0; s < positions; ++s) {
    const float p = scores[s];
    const float* v = values + static_cast<int64_t>(s) * C;
    for (int d = 0; d < HD; ++d) y[d] += p * v[d];
  }
}

}  // namespace

void attention_forward(float* out, const float* qkv, float* k_cache, float* v_cache, int pos0,
                       int T, int C, int NH, ThreadPool& pool) {
  const int HD = C / NH;
  for (int t = 0; t < T; ++t) {
    const float* row = qkv + static_cast<int64_t>(t) * 3 * C;
    std::copy(row + C, row + 2 * C, k_cache + static_cast<int64_t>(pos0 + t) * C);
    std::copy(row + 2 * C, row + 3 * C, v_cache + static_cast<int64_t>(pos0 + t) * C);
  }
  const float scale = 1.0f / std::sqrt(static_cast<float>(HD));
  // One task per (token, head) pair; each writes its own HD slice of out.
  pool.ParallelFor(static_cast<int64_t>(T) * NH, 1, [&](int64_t begin, int64_t end) {
    thread_local std::vector<float> scores;
    scores.resize(static_cast<size_t>(pos0 + T));
    for (int64_t task = begin; task < end; ++task) {
      const int t = static_cast<int>(task / NH), h = static_cast<int>(task % NH);
      AttendOneHead(out + static_cast<int64_t>(t) * C + h * HD,
                    qkv + static_cast<int64_t>(t) * 3 * C + h * HD, k_cache + h * HD,
                    v_cache + h * HD, pos0 + t + 1, C, HD, scale, scores.data());
    }
  });
}

}  // namespace dgpt
