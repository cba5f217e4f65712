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
  // x[T, C] in place; positions continue where the previous call of this sequence stopped.
  virtual Status Forward(float* x, int T) = 0;
  // Frees the sequence's state.
  virtual void End() = 0;
};

// All blocks in this process, over a checkpoint loaded with every layer.
class LocalBlockRunner : public BlockRunner {
 public:
  LocalBlockRunner(const Checkpoint& model, ThreadPool& pool, int max_chunk_tokens);
  Status Begin(int capacity) override;
  Status Forward(float* x, int T) override;
  void End() override { cache_.reset(); }

 private:
  const Checkpoint& model_;
  ThreadPool& pool_;
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
  int prefill_chunk = 256;  // prompt tokens per forward call
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
