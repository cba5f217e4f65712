#include "tools/bench/workload.h"

#include <fmt/format.h>

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <random>
#include <thread>

namespace dgpt::bench {

namespace {

// The trace of the sequence this thread runs (observe_step is called on the sequence's thread).
thread_local SequenceTrace* current_trace = nullptr;

// Timestamps Begin and every Forward of the runner it wraps.
class TracingRunner : public BlockRunner {
 public:
  TracingRunner(std::unique_ptr<BlockRunner> inner, SequenceTrace& trace)
      : inner_(std::move(inner)), trace_(trace) {}
  Status Begin(int capacity) override {
    Status status = inner_->Begin(capacity);
    trace_.begun = Now();
    return status;
  }
  Status Forward(float* x, int T, bool all_rows) override {
    const double begin = Now();
    Status status = inner_->Forward(x, T, all_rows);
    trace_.forwards.push_back({begin, Now()});
    return status;
  }
  void End() override { inner_->End(); }

 private:
  std::unique_ptr<BlockRunner> inner_;
  SequenceTrace& trace_;
};

// Holds every sequence after its first token until all have one; the last to arrive runs
// `completion` first. A sequence that fails aborts it so the others do not wait forever.
class PhaseBarrier {
 public:
  PhaseBarrier(int count, std::function<Status()> completion)
      : count_(count), completion_(std::move(completion)) {}

  // False when aborted (a sequence failed, or the completion did).
  bool ArriveAndWait() {
    std::unique_lock lock(mutex_);
    if (aborted_) return false;
    if (++arrived_ == count_) {
      status_ = completion_();  // the others are waiting anyway
      (status_.ok() ? released_ : aborted_) = true;
      changed_.notify_all();
      return released_;
    }
    changed_.wait(lock, [&] { return released_ || aborted_; });
    return released_;
  }
  void Abort() {
    std::lock_guard lock(mutex_);
    if (!released_) aborted_ = true;
    changed_.notify_all();
  }
  Status status() {
    std::lock_guard lock(mutex_);
    return status_;
  }

 private:
  const int count_;
  std::function<Status()> completion_;
  std::mutex mutex_;
  std::condition_variable changed_;
  int arrived_ = 0;
  bool released_ = false, aborted_ = false;
  Status status_;
};

}  // namespace

double Now() {
  static const auto epoch = std::chrono::steady_clock::now();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - epoch).count();
}

void RecordPipelineStep(const net::StepTimings& step) {
  if (current_trace) current_trace->steps.push_back(step);
}

std::vector<TokenId> RandomPrompt(const Workload& workload, int index, int vocab_size) {
  std::mt19937_64 rng(workload.seed + static_cast<uint64_t>(index));
  std::uniform_int_distribution<TokenId> id(0, vocab_size - 1);
  std::vector<TokenId> prompt(workload.prompt_tokens);
  for (TokenId& token : prompt) token = id(rng);
  return prompt;
}

Result<std::vector<SequenceTrace>> RunWorkload(const WorkloadSetup& setup, const Workload& workload,
                                               double* decode_start) {
  const int C = workload.concurrency;
  std::vector<SequenceTrace> traces(C);
  if (setup.at_phase) DGPT_RETURN_IF_ERROR(setup.at_phase(Phase::kBeforePrefill));
  PhaseBarrier barrier(C, [&]() -> Status {
    Status status = setup.at_phase ? setup.at_phase(Phase::kBeforeDecode) : Status::Ok();
    *decode_start = Now();
    return status;
  });
  std::mutex failure_mutex;
  Status failure;

  auto run_sequence = [&](int index) {
    SequenceTrace& trace = traces[index];
    const std::vector<TokenId> prompt =
        RandomPrompt(workload, index, setup.model->config().vocab_size);
    TracingRunner runner(setup.new_runner(), trace);
    GenerationOptions options;
    options.max_tokens = workload.generated_tokens;
    // Greedy and no end-of-text: exactly G tokens, the same ones on every run.
    options.sampling = {
        .temperature = 0, .top_k = 0, .top_p = 1, .repetition_penalty = 1, .seed = 0};
    options.logits_batcher = setup.logits_batcher;
    options.observe_logits = [&](std::span<const float>) { trace.logits.push_back(Now()); };
    auto on_token = [&](TokenId) {
      trace.token_in.push_back(Now());
      const bool go = trace.token_in.size() > 1 || barrier.ArriveAndWait();
      trace.token_out.push_back(Now());
      return go;
    };
    current_trace = &trace;
    trace.start = Now();
    auto result = Generate(*setup.model, runner, prompt, options, *setup.pool, on_token);
    current_trace = nullptr;
    Status status = result.status();
    if (result.ok() && static_cast<int>(result->generated_ids.size()) != options.max_tokens &&
        result->stop_reason != StopReason::kCaller) {
      status = Status::Error(fmt::format("sequence {} stopped after {} of {} tokens", index,
                                         result->generated_ids.size(), options.max_tokens));
    }
    if (!status.ok()) {
      {
        std::lock_guard lock(failure_mutex);
        if (failure.ok()) failure = status;
      }
      barrier.Abort();  // the others must not wait for this one's first token
    }
  };
  std::vector<std::thread> threads;
  for (int index = 0; index < C; ++index) threads.emplace_back(run_sequence, index);
  for (std::thread& thread : threads) thread.join();

  if (!failure.ok()) return failure;
  if (Status status = barrier.status(); !status.ok()) return status;
  for (const SequenceTrace& trace : traces) {
    if (static_cast<int>(trace.token_in.size()) != workload.generated_tokens) {
      return Status::Error("a sequence stopped early");  // aborted without a reason (a bug)
    }
  }
  if (setup.at_phase) DGPT_RETURN_IF_ERROR(setup.at_phase(Phase::kAfterDecode));
  return traces;
}

}  // namespace dgpt::bench
