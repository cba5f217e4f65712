// The measured part of `dgpt bench`: C sequences, each a prompt of P random token ids and G
// greedy tokens, run through the real generation loop (Generate) on their own threads, with
// every phase of every step timestamped. The sequences start together and start decoding
// together (a barrier after every first token), so prefill and decode never overlap and a
// stage's work counters can be read between the two phases.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "engine/checkpoint.h"
#include "engine/generator.h"
#include "net/coordinator.h"
#include "tools/bench/stats.h"

namespace dgpt::bench {

struct Workload {
  int prompt_tokens = 128;    // P
  int generated_tokens = 64;  // G (>= 2: the first comes from the prefill, the rest decode)
  int concurrency = 1;        // C sequences at once
  uint64_t seed = 1;          // for the prompt ids; sequence s uses seed + s
};

// One sequence's timestamps, in seconds on the bench's clock (see Now()).
struct SequenceTrace {
  double start = 0;                     // Generate called
  double begun = 0;                     // BlockRunner::Begin returned
  std::vector<Interval> forwards;       // BlockRunner::Forward: [0] the prompt, then decode
  std::vector<net::StepTimings> steps;  // pipeline: one per Forward, in the same order
  std::vector<double> logits;           // LM head done (observe_logits), one per token
  std::vector<double> token_in;         // token sampled (on_token entered)
  std::vector<double> token_out;        // the loop resumes (on_token returned)
};

// Seconds since the first call: the clock of every trace.
double Now();

// Where the benchmark stands, for reading stage counters (STATS) at the boundaries.
enum class Phase { kBeforePrefill, kBeforeDecode, kAfterDecode };

struct WorkloadSetup {
  const Checkpoint* model = nullptr;
  ThreadPool* pool = nullptr;
  // A fresh runner (own KV cache) for one sequence: LocalBlockRunner or Pipeline::NewSequence.
  std::function<std::unique_ptr<BlockRunner>()> new_runner;
  LogitsBatcher* logits_batcher = nullptr;  // shared by concurrent sequences, as dgpt serve does
  // Called at each phase boundary with no step in flight; an error stops the benchmark.
  std::function<Status(Phase)> at_phase;
};

// Pass to PipelineOptions::observe_step: files the step under the calling sequence's trace.
void RecordPipelineStep(const net::StepTimings& step);

// The random prompt of sequence `index`: P ids in [0, vocab_size).
std::vector<TokenId> RandomPrompt(const Workload& workload, int index, int vocab_size);

// Runs the workload; one trace per sequence. The first error of any sequence fails it all.
Result<std::vector<SequenceTrace>> RunWorkload(const WorkloadSetup& setup, const Workload& workload,
                                               double* decode_start);

}  // namespace dgpt::bench
