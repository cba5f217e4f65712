#include "engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <string>

namespace dgpt {

Status SamplingOptions::Validate() const {
  if (!(temperature >= 0.0f) || !std::isfinite(temperature)) {
    return Status::Error("temperature must be >= 0 (0 = greedy)");
  }
  if (top_k < 0) return Status::Error("top-k must be >= 0 (0 = off)");
  if (!(top_p > 0.0f && top_p <= 1.0f)) return Status::Error("top-p must be in (0, 1]");
  if (!(repetition_penalty > 0.0f) || !std::isfinite(repetition_penalty)) {
    return Status::Error("repetition penalty must be > 0 (1 = off)");
  }
  return Status::Ok();
}

Sampler::Sampler(const SamplingOptions& options) : options_(options), rng_(options.seed) {}

double Sampler::NextUniform() {
  return static_cast<double>(rng_() >> 11) * 0x1.0p-53;
}

TokenId Sampler::Sample(std::span<float> logits, std::span<const TokenId> context) {
  const int V = static_cast<int>(logits.size());
  if (options_.repetition_penalty != 1.0f) {
    // CTRL-style: shrink positive logits and grow negative ones of tokens already present.
    std::vector<bool> seen(V, false);
    for (TokenId id : context) {
      if (id < 0 || id >= V || seen[id]) continue;
      seen[id] = true;
      float& logit = logits[id];
      logit = logit > 0 ? logit / options_.repetition_penalty : logit * options_.repetition_penalty;
    }
  }
  if (options_.temperature == 0.0f) {  // greedy; ties go to the lowest id
    return static_cast<TokenId>(std::max_element(logits.begin(), logits.end()) - logits.begin());
  }

  candidates_.clear();
  candidates_.reserve(V);
  for (int i = 0; i < V; ++i) candidates_.emplace_back(logits[i] / options_.temperature, i);
  size_t keep = candidates_.size();
  const bool truncates =
      (options_.top_k > 0 && static_cast<size_t>(options_.top_k) < keep) || options_.top_p < 1.0f;
  if (truncates) {
    // Highest first; equal logits ordered by id so the result never depends on sort internals.
    auto higher = [](const auto& a, const auto& b) {
      return a.first != b.first ? a.first > b.first : a.second < b.second;
    };
    if (options_.top_k > 0 && static_cast<size_t>(options_.top_k) < keep) {
      keep = options_.top_k;
      std::partial_sort(candidates_.begin(), candidates_.begin() + keep, candidates_.end(), higher);
    } else {
      std::sort(candidates_.begin(), candidates_.end(), higher);
    }
    candidates_.resize(keep);
  }
  // (Without truncation the full distribution is sampled in id order: no sort needed.)

  // Softmax over the survivors, in double so tiny probabilities still add up.
  double max_logit = candidates_.front().first;
  for (const auto& candidate : candidates_)
    max_logit = std::max<double>(max_logit, candidate.first);
  std::vector<double> probs(keep);
  double total = 0.0;
  for (size_t i = 0; i < keep; ++i) {
    probs[i] = std::exp(static_cast<double>(candidates_[i].first) - max_logit);
    total += probs[i];
  }
  if (options_.top_p < 1.0f) {  // smallest prefix whose mass reaches top_p
    double mass = 0.0;
    size_t cut = 0;
    while (cut < keep) {
      mass += probs[cut++] / total;
      if (mass >= options_.top_p) break;
    }
    keep = cut;
    total = 0.0;
    for (size_t i = 0; i < keep; ++i) total += probs[i];
  }
  const double target = NextUniform() * total;
  double cumulative = 0.0;
  for (size_t i = 0; i < keep; ++i) {
    cumulative += probs[i];
    if (target < cumulative) return candidates_[i].second;
  }
  return candidates_[keep - 1].second;
}

}  // namespace dgpt
