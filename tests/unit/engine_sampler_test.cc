#include <catch2/catch.hpp>
#include <set>
#include <vector>

#include "engine/sampler.h"

using namespace dgpt;

namespace {
std::vector<float> Logits() {
  return {0.5f, 3.0f, 2.9f, -1.0f, 1.0f, 2.0f};
}
}  // namespace

TEST_CASE("temperature 0 is argmax, ties to the lowest id", "[sampler]") {
  Sampler sampler({.temperature = 0.0f});
  auto logits = Logits();
  REQUIRE(sampler.Sample(logits, {}) == 1);
  std::vector<float> tie = {1.0f, 5.0f, 5.0f};
  REQUIRE(sampler.Sample(tie, {}) == 1);
}

TEST_CASE("the same seed gives the same tokens; another seed differs", "[sampler]") {
  auto draw = [](uint64_t seed) {
    Sampler sampler({.temperature = 1.0f, .top_k = 0, .top_p = 1.0f, .seed = seed});
    std::vector<TokenId> out;
    for (int i = 0; i < 64; ++i) {
      auto logits = Logits();
      out.push_back(sampler.Sample(logits, {}));
    }
    return out;
  };
  REQUIRE(draw(42) == draw(42));
  REQUIRE(draw(42) != draw(43));
}

TEST_CASE("top-k keeps only the k best tokens", "[sampler]") {
  Sampler sampler({.temperature = 5.0f, .top_k = 2, .top_p = 1.0f, .seed = 1});
  std::set<TokenId> seen;
  for (int i = 0; i < 500; ++i) {
    auto logits = Logits();
    seen.insert(sampler.Sample(logits, {}));
  }
  REQUIRE(seen == std::set<TokenId>{1, 2});
}

TEST_CASE("top-p keeps the smallest set reaching the mass", "[sampler]") {
  // probabilities ~ 0.5, 0.3, 0.2: top_p 0.7 keeps the first two only.
  std::vector<float> base = {std::log(0.5f), std::log(0.3f), std::log(0.2f)};
  Sampler sampler({.temperature = 1.0f, .top_k = 0, .top_p = 0.7f, .seed = 3});
  std::set<TokenId> seen;
  for (int i = 0; i < 500; ++i) {
    auto logits = base;
    seen.insert(sampler.Sample(logits, {}));
  }
  REQUIRE(seen == std::set<TokenId>{0, 1});
}

TEST_CASE("sampling frequencies follow the softmax", "[sampler]") {
  std::vector<float> base = {std::log(0.6f), std::log(0.3f), std::log(0.1f)};
  Sampler sampler({.temperature = 1.0f, .top_k = 0, .top_p = 1.0f, .seed = 7});
  std::vector<int> counts(3);
  const int n = 20000;
  for (int i = 0; i < n; ++i) {
    auto logits = base;
    counts[sampler.Sample(logits, {})]++;
  }
  REQUIRE(counts[0] / double(n) == Approx(0.6).margin(0.02));
  REQUIRE(counts[1] / double(n) == Approx(0.3).margin(0.02));
  REQUIRE(counts[2] / double(n) == Approx(0.1).margin(0.02));
}

TEST_CASE("repetition penalty pushes down tokens already in the context", "[sampler]") {
  Sampler sampler({.temperature = 0.0f, .repetition_penalty = 2.0f});
  auto logits = Logits();  // best is 1 (3.0); penalised to 1.5, so 2 (2.9) wins
  std::vector<TokenId> context = {1};
  REQUIRE(sampler.Sample(logits, context) == 2);
  REQUIRE(logits[1] == Approx(1.5f));
  auto negative = std::vector<float>{-1.0f, -1.5f};
  std::vector<TokenId> context0 = {0};
  REQUIRE(sampler.Sample(negative, context0) == 1);  // -1 * 2 = -2 < -1.5
}

TEST_CASE("bad sampling options are clear errors", "[sampler]") {
  REQUIRE_FALSE(SamplingOptions{.temperature = -1.0f}.Validate().ok());
  REQUIRE_FALSE(SamplingOptions{.top_p = 0.0f}.Validate().ok());
  REQUIRE_FALSE(SamplingOptions{.top_p = 1.5f}.Validate().ok());
  REQUIRE_FALSE(SamplingOptions{.top_k = -3}.Validate().ok());
  REQUIRE(SamplingOptions{}.Validate().ok());
}
