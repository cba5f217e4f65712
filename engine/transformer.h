// The GPT-2 forward pass, in the three pieces a pipeline distributes: the embedding (on the
// coordinator), a contiguous range of transformer blocks (on each stage), and the final norm +
// LM head (on the coordinator). Prefill (T > 1 tokens) and decode (T = 1) share one code path.
#pragma once

#include <condition_variable>
#include <mutex>
#include <span>
#include <vector>

#include "base/token.h"
#include "engine/checkpoint.h"
#include "engine/kv_cache.h"
#include "engine/thread_pool.h"

namespace dgpt {

// Scratch activations for up to max_tokens tokens at once, reused across calls.
class Workspace {
 public:
  Workspace(const ModelConfig& config, int max_tokens);
  int max_tokens() const { return max_tokens_; }

  std::vector<float> normed;     // [T, C]
  std::vector<float> qkv;        // [T, 3C]
  std::vector<float> attention;  // [T, C]
  std::vector<float> projected;  // [T, C]
  std::vector<float> hidden;     // [T, 4C]

 private:
  int max_tokens_;
};

// x[T, C] = wte[ids] + wpe[pos0 ..]. REQUIRES: checkpoint loaded with embeddings, ids < V,
// pos0 + T <= n_positions.
void EmbedTokens(float* x, const Checkpoint& model, std::span<const TokenId> ids, int pos0);

// Runs the blocks in cache.layers() over x[T, C] in place, for positions
// cache.length() .. cache.length() + T - 1, and advances the cache by T.
// REQUIRES: the checkpoint holds those layers, cache.length() + T <= cache.capacity(),
// T <= workspace.max_tokens().
void ForwardBlocks(float* x, int T, KvCache& cache, const Checkpoint& model, Workspace& workspace,
                   ThreadPool& pool);

// One decode step for B sequences at once (the batched decode of a pipeline stage): row b of
// x[B, C] is the next token of the sequence whose cache is caches[b], at position
// caches[b]->length(). Weights are read once per layer for the whole batch; every row's result
// is bit-identical to ForwardBlocks with T = 1. All caches must cover the same layers.
// REQUIRES: B <= workspace.max_tokens(), each cache has room for one more position.
void ForwardBlocksBatch(float* x, std::span<KvCache* const> caches, const Checkpoint& model,
                        Workspace& workspace, ThreadPool& pool);

// logits[V] = lm_head(ln_f(x[C])) for one position. `normed` is scratch of size C.
void ComputeLogits(float* logits, const float* x, const Checkpoint& model, float* normed,
                   ThreadPool& pool);

// ComputeLogits for many threads at once: calls that arrive while a batch is being computed are
// served together by the next one, so the LM head — the largest matrix of a small GPT — is read
// once per batch instead of once per sequence. Results are bit-identical to ComputeLogits.
class LogitsBatcher {
 public:
  LogitsBatcher(const Checkpoint& model, ThreadPool& pool, int max_batch = 32);
  // logits[V] for x[C]; blocks until computed. Thread-safe.
  void Compute(float* logits, const float* x);

 private:
  struct Request {
    float* logits;
    const float* x;
    bool done = false;
  };
  void RunBatch(std::vector<Request*>& batch);

  const Checkpoint& model_;
  ThreadPool& pool_;
  const int max_batch_;
  std::mutex mutex_;
  std::condition_variable done_;
  std::vector<Request*> pending_;
  bool leader_active_ = false;
  std::vector<float> normed_;  // [max_batch, C], leader only
  std::vector<float> logits_;  // [max_batch, V], leader only
};

}  // namespace dgpt
