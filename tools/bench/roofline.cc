#include "tools/bench/roofline.h"

namespace dgpt::bench {

int64_t DecodeWeightBytes(const ModelConfig& config, int layers, WeightFormat format,
                          bool lm_head) {
  const int64_t C = config.n_embd, V = config.vocab_size;
  constexpr int64_t kFloat = sizeof(float);
  // Matrices are stored one output per row: W[out, in].
  const int64_t matrices = 3 * C * WeightRowBytes(format, C)     // qkv
                           + C * WeightRowBytes(format, C)       // attention projection
                           + 4 * C * WeightRowBytes(format, C)   // MLP up
                           + C * WeightRowBytes(format, 4 * C);  // MLP down
  const int64_t vectors = (3 * C + C + 4 * C + C) * kFloat       // biases
                          + 4 * C * kFloat;                      // two layer norms
  int64_t bytes = layers * (matrices + vectors);
  if (lm_head) bytes += V * WeightRowBytes(format, C) + 2 * C * kFloat + 2 * C * kFloat;
  return bytes;
}

Roofline ComputeRoofline(double bytes_per_step, double seconds_per_step, double bandwidth_gbs) {
  Roofline roofline;
  if (bytes_per_step <= 0 || seconds_per_step <= 0) return roofline;
  roofline.achieved_gbs = bytes_per_step / seconds_per_step / 1e9;
  if (bandwidth_gbs > 0) roofline.roofline_percent = 100 * roofline.achieved_gbs / bandwidth_gbs;
  return roofline;
}

}  // namespace dgpt::bench
