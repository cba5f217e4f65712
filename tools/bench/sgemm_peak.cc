#include "tools/bench/sgemm_peak.h"

#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <vector>

#include "engine/ops.h"

namespace dgpt::bench {

double MeasureSgemmGflops(int M, int N, int K, int threads, double min_seconds) {
  SetBlasThreads(threads);
  // B is [N, K] and transposed, as the engine stores weights one output per row.
  std::vector<float> a(static_cast<size_t>(M) * K, 0.5f), b(static_cast<size_t>(N) * K, 0.25f);
  std::vector<float> c(static_cast<size_t>(M) * N);
  double best = 0, elapsed = 0;
  for (int run = 0; run < 3 || elapsed < min_seconds; ++run) {
    const auto start = std::chrono::steady_clock::now();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, a.data(), K, b.data(), K,
                0.0f, c.data(), N);
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    elapsed += seconds;
    if (run > 0) best = std::max(best, 2.0 * M * N * K / seconds / 1e9);  // run 0 warms up
  }
  return best;
}

}  // namespace dgpt::bench
