// The model behind `dgpt serve`: checkpoint, tokenizer and either the blocks in this process or
// a pipeline of workers — set up exactly as `dgpt generate` does, so the same prompt, seed and
// sampling options give the same tokens. Any number of request threads may call Run at once;
// each call gets its own KV cache (a LocalBlockRunner, or a Pipeline::NewSequence()), and at
// most max_sequences calls run at a time.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "engine/checkpoint.h"
#include "engine/generator.h"
#include "engine/thread_pool.h"
#include "net/coordinator.h"
#include "tokenizer/tokenizer.h"
#include "tools/cli_util.h"
#include "tools/pipeline_args.h"
#include "tools/serve/stage_status.h"

namespace dgpt::net {
class Pipeline;
}
namespace dgpt::cli {
class LocalWorkers;
}

namespace dgpt::serve {

struct EngineOptions {
  std::string model_dir;
  int threads = 0;  // 0 = all cores
  int prefill_chunk = 128;
  int max_sequences = 16;
  // As in dgpt generate; neither workers nor local workers: all layers in this process.
  cli::PipelineArgs pipeline;
  cli::WeightFormatArgs formats;
};

class CompletionEngine {
 public:
  // Loads the model and tokenizer, starts local workers and connects the pipeline. Call from
  // the main thread: local workers are tied to the lifetime of the thread that starts them.
  static Result<std::unique_ptr<CompletionEngine>> Start(const EngineOptions& options);
  ~CompletionEngine();

  const std::string& model_name() const { return model_name_; }
  const ModelConfig& config() const { return model_->config(); }
  const Tokenizer& tokenizer() const { return *tokenizer_; }
  bool uses_pipeline() const { return pipeline_ != nullptr; }
  int max_sequences() const { return max_sequences_; }
  int sequences_running() const { return running_.load(); }
  // "stage 1: ... | ..." or "all 12 layers in this process".
  std::string PlanDescription() const;

  // Permission to run one generation; at most max_sequences exist at once. Releases on
  // destruction.
  class Slot {
   public:
    ~Slot();
    Slot(const Slot&) = delete;
    Slot& operator=(const Slot&) = delete;

   private:
    friend class CompletionEngine;
    explicit Slot(std::atomic<int>& running) : running_(running) {}
    std::atomic<int>& running_;
  };
  // nullptr when max_sequences generations are running. Thread-safe.
  std::unique_ptr<Slot> TryAcquireSlot();

  // Generates one completion on its own sequence. `on_token` as in Generate(); the generation
  // also stops (StopReason::kCaller) once StopAll() was called. Thread-safe.
  Result<GenerationResult> Run(const Slot& slot, std::vector<TokenId> prompt,
                               const GenerationOptions& options, const TokenCallback& on_token);

  // Sees every pipeline step's per-stage timings (for /metrics). Set before serving starts.
  void SetStepObserver(std::function<void(const net::StepTimings&)> observer) {
    step_observer_ = std::move(observer);
  }

  // Every running and later generation ends at its next token (for shutdown).
  void StopAll() { stopping_ = true; }
  bool stopping() const { return stopping_.load(); }

  // Pings every stage now (pipeline), or describes this process (local).
  std::vector<StageStatus> CheckHealth();
  // The last known state of every stage plus its STATS counters.
  std::vector<StageStatus> CollectStats();

 private:
  CompletionEngine() = default;
  StageStatus LocalStage() const;
  class CountingRunner;

  std::string model_name_;
  int max_sequences_ = 1;
  std::unique_ptr<ThreadPool> pool_;
  std::unique_ptr<Checkpoint> model_;
  std::unique_ptr<Tokenizer> tokenizer_;
  std::unique_ptr<cli::LocalWorkers> local_workers_;
  std::unique_ptr<net::Pipeline> pipeline_;
  std::unique_ptr<LogitsBatcher> logits_batcher_;  // concurrent requests share the LM head read
  std::function<void(const net::StepTimings&)> step_observer_;
  int prefill_chunk_ = 128;
  std::atomic<int> running_{0};
  std::atomic<bool> stopping_{false};
  // Work done in this process (local mode), reported like a worker's STATS.
  std::atomic<uint32_t> local_sequences_{0};
  std::atomic<uint64_t> local_forwards_{0};
  std::atomic<uint64_t> local_tokens_{0};
  std::atomic<uint64_t> local_compute_ns_{0};
};

}  // namespace dgpt::serve
