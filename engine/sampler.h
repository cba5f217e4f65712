// Turns logits into the next token: repetition penalty, then temperature, top-k, top-p
// (the order Hugging Face applies them), then a draw from a seeded generator.
#pragma once

#include <cstdint>
#include <random>
#include <span>
#include <vector>

#include "base/status.h"
#include "base/token.h"

namespace dgpt {

struct SamplingOptions {
  float temperature = 0.8f;         // 0 = greedy (argmax)
  int top_k = 40;                   // 0 = off
  float top_p = 0.95f;              // 1 = off
  float repetition_penalty = 1.0f;  // 1 = off; > 1 discourages tokens already in the context
  uint64_t seed = 0;

  // Range checks with one-line messages ("--top-p must be in (0, 1]").
  Status Validate() const;
};

class Sampler {
 public:
  explicit Sampler(const SamplingOptions& options);

  // Picks a token from logits[V] (modified in place). `context` holds the prompt and the tokens
  // generated so far, for the repetition penalty. The same seed gives the same choices.
  TokenId Sample(std::span<float> logits, std::span<const TokenId> context);

 private:
  double NextUniform();  // in [0, 1), identical on every platform for a given seed

  SamplingOptions options_;
  std::mt19937_64 rng_;
  std::vector<std::pair<float, TokenId>> candidates_;
};

}  // namespace dgpt
