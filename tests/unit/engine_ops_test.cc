// The engine's kernels against naive loops written straight from the definitions.
#include <catch2/catch.hpp>
#include <cmath>
#include <random>
#include <vector>

#include "engine/ops.h"
#include "engine/thread_pool.h"

using namespace dgpt;

namespace {

std::vector<float> RandomVector(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = normal(rng);
  return v;
}

void RequireClose(const std::vector<float>& actual, const std::vector<double>& expected,
                  double tolerance) {
  REQUIRE(actual.size() == expected.size());
  double max_diff = 0;
  size_t worst = 0;
  for (size_t i = 0; i < actual.size(); ++i) {
    const double diff = std::abs(actual[i] - expected[i]);
    if (diff > max_diff) max_diff = diff, worst = i;
  }
  INFO("max diff " << max_diff << " at " << worst << ": " << actual[worst] << " vs "
                   << expected[worst]);
  REQUIRE(max_diff <= tolerance);
}

}  // namespace

TEST_CASE("layernorm matches the definition", "[ops]") {
  const int T = 3, C = 37;
  auto x = RandomVector(T * C, 1, 3.0f), w = RandomVector(C, 2), b = RandomVector(C, 3);
  std::vector<float> out(T * C);
  layernorm_forward(out.data(), x.data(), w.data(), b.data(), T, C, 1e-5f);
  std::vector<double> expected(T * C);
  for (int t = 0; t < T; ++t) {
    double mean = 0, var = 0;
    for (int c = 0; c < C; ++c) mean += x[t * C + c];
    mean /= C;
    for (int c = 0; c < C; ++c) var += (x[t * C + c] - mean) * (x[t * C + c] - mean);
    var /= C;
    for (int c = 0; c < C; ++c) {
      expected[t * C + c] = (x[t * C + c] - mean) / std::sqrt(var + 1e-5) * w[c] + b[c];
    }
  }
  RequireClose(out, expected, 1e-5);
}

TEST_CASE("gelu_new is the tanh approximation; gelu is the erf form", "[ops]") {
  auto x = RandomVector(1000, 4, 3.0f);
  auto y = x;
  gelu_forward(y.data(), y.size(), Activation::kGeluTanh);
  std::vector<double> expected(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    const double v = x[i];
    expected[i] = 0.5 * v * (1 + std::tanh(std::sqrt(2 / M_PI) * (v + 0.044715 * v * v * v)));
  }
  RequireClose(y, expected, 1e-6);
  y = x;
  gelu_forward(y.data(), y.size(), Activation::kGeluErf);
  for (size_t i = 0; i < x.size(); ++i)
    expected[i] = 0.5 * x[i] * (1 + std::erf(x[i] / std::sqrt(2.0)));
  RequireClose(y, expected, 1e-6);
}

TEST_CASE("softmax sums to one and survives large logits", "[ops]") {
  std::vector<float> x = {1000.0f, 999.0f, -1000.0f, 0.0f};
  softmax_forward(x.data(), 4);
  const double e = std::exp(-1.0);
  RequireClose(x, {1 / (1 + e), e / (1 + e), 0.0, 0.0}, 1e-6);
}

// A Conv1D weight w[IN, OUT] (as checkpoints store it) packed for the kernels in `format`.
struct PackedWeight {
  AlignedBytes storage;
  WeightMatrix matrix;
};
PackedWeight Pack(const std::vector<float>& w, int IN, int OUT, WeightFormat format) {
  PackedWeight packed;
  auto matrix = PackMatrix({reinterpret_cast<const std::byte*>(w.data()), DType::kF32, OUT, IN,
                            /*transposed=*/true},
                           format, &packed.storage);
  REQUIRE(matrix.ok());
  packed.matrix = *matrix;
  return packed;
}

constexpr WeightFormat kFormats[] = {WeightFormat::kF32, WeightFormat::kF16, WeightFormat::kQ8_0};

TEST_CASE("matmul: sgemm (T >= 8), batched and gemv (T == 1) paths match the naive product",
          "[ops]") {
  const int IN = 96, OUT = 45;
  auto w = RandomVector(IN * OUT, 5), bias = RandomVector(OUT, 6);
  for (WeightFormat format : kFormats) {
    PackedWeight packed = Pack(w, IN, OUT, format);
    // The reference multiplies by the weights as stored (widened back), in double.
    std::vector<float> stored(OUT * IN);
    for (int o = 0; o < OUT; ++o) WeightRowToFloat(&stored[o * IN], packed.matrix, o);
    for (int threads : {1, 2, 3}) {
      ThreadPool pool(threads);
      for (int T : {1, 2, 7, 8, 19}) {
        auto in = RandomVector(T * IN, 7 + T);
        std::vector<float> out(T * OUT);
        matmul_forward(out.data(), in.data(), packed.matrix, bias.data(), T, pool);
        // With q8_0 weights every path multiplies the input rounded through q8_0.
        std::vector<float> multiplied = in;
        if (format == WeightFormat::kQ8_0) {
          std::vector<BlockQ8_0> blocks(T * IN / kQ8BlockSize);
          ActiveKernels().quantize_q8_0(blocks.data(), in.data(), T * IN);
          ActiveKernels().to_f32_q8_0(multiplied.data(), blocks.data(), IN, 0, T);
        }
        std::vector<double> expected(T * OUT);
        for (int t = 0; t < T; ++t) {
          for (int o = 0; o < OUT; ++o) {
            double sum = bias[o];
            for (int i = 0; i < IN; ++i) sum += double(multiplied[t * IN + i]) * stored[o * IN + i];
            expected[t * OUT + o] = sum;
          }
        }
        INFO("format " << WeightFormatName(format) << ", threads " << threads << ", T " << T);
        RequireClose(out, expected, 1e-4);
      }
    }
  }
}

TEST_CASE("decode gemv gives bit-identical results for any thread count", "[ops]") {
  const int IN = 320, OUT = 1000;
  auto w = RandomVector(IN * OUT, 8), in = RandomVector(IN, 9), bias = RandomVector(OUT, 10);
  for (WeightFormat format : kFormats) {
    PackedWeight packed = Pack(w, IN, OUT, format);
    std::vector<float> reference(OUT);
    ThreadPool one(1);
    matmul_forward(reference.data(), in.data(), packed.matrix, bias.data(), 1, one);
    for (int threads : {2, 3, 4}) {
      ThreadPool pool(threads);
      std::vector<float> out(OUT);
      matmul_forward(out.data(), in.data(), packed.matrix, bias.data(), 1, pool);
      INFO("format " << WeightFormatName(format) << ", threads " << threads);
      REQUIRE(out == reference);
    }
  }
}

TEST_CASE("q8_0 packing refuses rows that are not whole blocks", "[ops]") {
  std::vector<float> w(40 * 3);
  AlignedBytes storage;
  auto matrix = PackMatrix({reinterpret_cast<const std::byte*>(w.data()), DType::kF32, 3, 40,
                            /*transposed=*/false},
                           WeightFormat::kQ8_0, &storage);
  REQUIRE_FALSE(matrix.ok());
  REQUIRE_THAT(matrix.status().message(), Catch::Contains("multiple of 32"));
}

TEST_CASE("causal attention with a KV cache matches naive attention", "[ops]") {
  const int C = 24, NH = 3, HD = C / NH;
  const int S = 9;  // total positions
  auto qkv = RandomVector(S * 3 * C, 11);
  // Naive: every position attends to itself and earlier positions only.
  std::vector<double> expected(S * C);
  for (int t = 0; t < S; ++t) {
    for (int h = 0; h < NH; ++h) {
      std::vector<double> score(t + 1);
      double max_score = -1e30;
      for (int s = 0; s <= t; ++s) {
        double dot = 0;
        for (int d = 0; d < HD; ++d) {
          dot += double(qkv[t * 3 * C + h * HD + d]) * qkv[s * 3 * C + C + h * HD + d];
        }
        score[s] = dot / std::sqrt(double(HD));
        max_score = std::max(max_score, score[s]);
      }
      double sum = 0;
      for (double& s : score) sum += (s = std::exp(s - max_score));
      for (int d = 0; d < HD; ++d) {
        double y = 0;
        for (int s = 0; s <= t; ++s) y += score[s] / sum * qkv[s * 3 * C + 2 * C + h * HD + d];
        expected[t * C + h * HD + d] = y;
      }
    }
  }
  ThreadPool pool(2);
  SECTION("all positions in one call") {
    std::vector<float> k(S * C), v(S * C), out(S * C);
    attention_forward(out.data(), qkv.data(), k.data(), v.data(), 0, S, C, NH, pool);
    RequireClose(out, expected, 1e-5);
  }
  SECTION("a prefix, then one position at a time") {
    std::vector<float> k(S * C), v(S * C), out(S * C);
    const int prefix = 4;
    attention_forward(out.data(), qkv.data(), k.data(), v.data(), 0, prefix, C, NH, pool);
    for (int t = prefix; t < S; ++t) {
      attention_forward(out.data() + t * C, qkv.data() + t * 3 * C, k.data(), v.data(), t, 1, C, NH,
                        pool);
    }
    RequireClose(out, expected, 1e-5);
  }
}

TEST_CASE("thread pool runs every task exactly once, many times over", "[threads]") {
  ThreadPool pool(3);
  for (int round = 0; round < 200; ++round) {
    const int n = round % 17;
    std::vector<std::atomic<int>> hits(n);
    pool.Run(n, [&](int task) { hits[task]++; });
    for (auto& h : hits) REQUIRE(h.load() == 1);
  }
  std::vector<int> covered(1000, 0);
  pool.ParallelFor(1000, 64, [&](int64_t begin, int64_t end) {
    REQUIRE(begin % 64 == 0);
    for (int64_t i = begin; i < end; ++i) covered[i]++;
  });
  for (int c : covered) REQUIRE(c == 1);
}

TEST_CASE("batched decode rows are bit-identical to one row at a time", "[ops]") {
  const int IN = 96, OUT = 90, B = 5;
  auto w = RandomVector(IN * OUT, 14), bias = RandomVector(OUT, 15), in = RandomVector(B * IN, 16);
  for (WeightFormat format : kFormats) {
    PackedWeight packed = Pack(w, IN, OUT, format);
    for (int threads : {1, 2, 3}) {
      ThreadPool pool(threads);
      std::vector<float> batched(B * OUT);
      matmul_rows_forward(batched.data(), in.data(), packed.matrix, bias.data(), B, pool);
      for (int b = 0; b < B; ++b) {
        std::vector<float> single(OUT);
        matmul_forward(single.data(), in.data() + b * IN, packed.matrix, bias.data(), 1, pool);
        INFO("format " << WeightFormatName(format) << ", threads " << threads << ", row " << b);
        REQUIRE(std::equal(single.begin(), single.end(), batched.begin() + b * OUT));
      }
    }
  }
}
