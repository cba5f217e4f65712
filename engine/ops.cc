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

// y[j0:j1] = bias + sum_i x[i] * W[i, j0:j1]. Each output is accumulated in the same order
// whatever the column split, so results do not depend on the thread count.
void gemv_columns(float* y, const float* x, const float* weight, const float* bias, int IN, int OUT,
                  int64_t j0, int64_t j1) {
  float* __restrict dst = y;
  for (int64_t j = j0; j < j1; ++j) dst[j] = bias ? bias[j] : 0.0f;
  for (int i = 0; i < IN; ++i) {
    const float xi = x[i];
    const float* __restrict row = weight + static_cast<int64_t>(i) * OUT;
    for (int64_t j = j0; j < j1; ++j) dst[j] += xi * row[j];
  }
}

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

}  // namespace

void matmul_forward(float* out, const float* in, const float* weight, const float* bias, int T,
                    int IN, int OUT, ThreadPool& pool) {
  if (T == 1) {
    pool.ParallelFor(OUT, 16, [&](int64_t j0, int64_t j1) {
      gemv_columns(out, in, weight, bias, IN, OUT, j0, j1);
    });
    return;
  }
  for (int t = 0; t < T; ++t) {
    float* row = out + static_cast<int64_t>(t) * OUT;
    if (bias) {
      std::copy(bias, bias + OUT, row);
    } else {
      std::fill(row, row + OUT, 0.0f);
    }
  }
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, OUT, IN, 1.0f, in, IN, weight, OUT,
              1.0f, out, OUT);
}

void matmul_rows_forward(float* out, const float* in, const float* weight, const float* bias, int B,
                         int IN, int OUT, ThreadPool& pool) {
  if (B == 1) {
    matmul_forward(out, in, weight, bias, 1, IN, OUT, pool);
    return;
  }
  pool.ParallelFor(OUT, 16, [&](int64_t j0, int64_t j1) {
    for (int b = 0; b < B; ++b) {
      float* y = out + static_cast<int64_t>(b) * OUT;
      for (int64_t j = j0; j < j1; ++j) y[j] = bias ? bias[j] : 0.0f;
    }
    // Same order as gemv_columns for every row: bias, then i = 0, 1, ... accumulated per output.
    for (int i = 0; i < IN; ++i) {
      const float* __restrict row = weight + static_cast<int64_t>(i) * OUT;
      for (int b = 0; b < B; ++b) {
        const float xi = in[static_cast<int64_t>(b) * IN + i];
        float* __restrict y = out + static_cast<int64_t>(b) * OUT;
        for (int64_t j = j0; j < j1; ++j) y[j] += xi * row[j];
      }
    }
  });
}

void gelu_forward(float* x, int64_t N, Activation activation) {
  if (activation == Activation::kGeluErf) {
    for (int64_t i = 0; i < N; ++i) x[i] = 0.5f * x[i] * (1.0f + std::erf(x[i] * float(M_SQRT1_2)));
    return;
  }
  const float kSqrt2OverPi = 0.7978845608028654f;
  for (int64_t i = 0; i < N; ++i) {
    const float v = x[i];
    x[i] = 0.5f * v * (1.0f + std::tanh(kSqrt2OverPi * (v + 0.044715f * v * v * v)));
  }
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
    std::vector<float> scores(pos0 + T);
    for (int64_t task = begin; task < end; ++task) {
      const int t = static_cast<int>(task / NH), h = static_cast<int>(task % NH);
      const int positions = pos0 + t + 1;  // causal: itself and everything before
      const float* q = qkv + static_cast<int64_t>(t) * 3 * C + h * HD;
      for (int s = 0; s < positions; ++s) {
        scores[s] = dot(q, k_cache + static_cast<int64_t>(s) * C + h * HD, HD) * scale;
      }
      softmax_forward(scores.data(), positions);
      float* y = out + static_cast<int64_t>(t) * C + h * HD;
      std::fill(y, y + HD, 0.0f);
      for (int s = 0; s < positions; ++s) {
        const float p = scores[s];
        const float* v = v_cache + static_cast<int64_t>(s) * C + h * HD;
        for (int d = 0; d < HD; ++d) y[d] += p * v[d];
      }
    }
  });
}

void logits_forward(float* logits, const float* x, const float* head, int V, int C,
                    ThreadPool& pool) {
  pool.ParallelFor(V, 64, [&](int64_t v0, int64_t v1) {
    for (int64_t v = v0; v < v1; ++v) logits[v] = dot(x, head + v * C, C);
  });
}

void logits_rows_forward(float* logits, const float* x, const float* head, int B, int V, int C,
                         ThreadPool& pool) {
  pool.ParallelFor(V, 64, [&](int64_t v0, int64_t v1) {
    for (int64_t v = v0; v < v1; ++v) {
      const float* row = head + v * C;  // stays in cache while every sequence uses it
      for (int b = 0; b < B; ++b) {
        logits[static_cast<int64_t>(b) * V + v] = dot(x + static_cast<int64_t>(b) * C, row, C);
      }
    }
  });
}

}  // namespace dgpt
