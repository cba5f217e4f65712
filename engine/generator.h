// The generation loop: prompt -> prefill -> sample -> decode -> ... until end-of-text, the token
// budget, or the caller says stop. The blocks run behind BlockRunner, so the same loop drives
// a single process (LocalBlockRunner) or a pipeline of workers.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "engine/checkpoint.h"
#include "engine/kv_cache.h"
#include "engine/sampler.h"
#include "engine/transformer.h"

namespace dgpt {

// Runs hidden states through every transformer block for one sequence at a time.
class BlockRunner {
 public:
  virtual ~BlockRunner() = default;
  // Starts a new sequence with room for `capacity` positions.
  virtual Status Begin(int capacity) = 0;
  // Runs x[T, C] in place; positions continue where the previous call of this sequence stopped.
  // With all_rows false only the last row of x is guaranteed to be updated (all the LM head
  // needs), which lets a pipeline send back one row instead of T.
  virtual Status Forward(float* x, int T, bool all_rows) = 0;
  // Frees the sequence's state.
  virtual void End() = 0;
};

// The blocks of `layers` in this process (all of them by default). Prompts are computed in
// chunks of `chunk_tokens` rows — the same chunking a pipeline uses, so that both give
// bit-identical results.
class LocalBlockRunner : public BlockRunner {
 public:
  LocalBlockRunner(const Checkpoint& model, ThreadPool& pool, int chunk_tokens,
                   std::optional<LayerRange> layers = std::nullopt);
  Status Begin(int capacity) override;
  Status Forward(float* x, int T, bool all_rows) override;
  void End() override { cache_.reset(); }

 private:
  const Checkpoint& model_;
  ThreadPool& pool_;
  LayerRange layers_;
  Workspace workspace_;
  std::unique_ptr<KvCache> cache_;
};

struct GenerationOptions {
  int max_tokens = 64;
  SamplingOptions sampling;
  std::optional<TokenId> end_of_text;  // stop when sampled (unless ignore_end_of_text)
  bool ignore_end_of_text = false;
  // Drop the oldest prompt tokens when prompt + max_tokens exceeds the context, instead of
  // failing.
  bool truncate_prompt = false;
  // When set, logits are computed through it, batched with other concurrent generations.
  LogitsBatcher* logits_batcher = nullptr;
  // Sees the raw logits of every step before sampling changes them (for --logits-out).
  std::function<void(std::span<const float>)> observe_logits;
};

enum class StopReason { kEndOfText, kMaxTokens, kCaller };
const char* StopReasonName(StopReason reason);  // "end_of_text", "max_tokens", "stop"

struct GenerationResult {
  std::vector<TokenId> prompt_ids;  // after truncation, what the model actually saw
  std::vector<TokenId> generated_ids;
  StopReason stop_reason = StopReason::kMaxTokens;
  double prefill_seconds = 0;      // prompt forward pass
  double first_token_seconds = 0;  // from start to the first sampled token
  double decode_seconds = 0;       // after the first token
};

// Called with each sampled token (already appended to generated_ids); return false to stop.
using TokenCallback = std::function<bool(TokenId)>;

// REQUIRES: `model` loaded with embeddings and head.
Result<GenerationResult> Generate(const Checkpoint& model, BlockRunner& blocks,
                                  std::vector<TokenId> prompt, const GenerationOptions& options,
                                  ThreadPool& pool, const TokenCallback& on_token = nullptr);

}  // namespace dgpt
