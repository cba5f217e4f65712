// The coordinator's side of the pipeline: a BlockRunner whose blocks live on worker processes.
// It plans which layers each worker holds, sends ASSIGN with the expected fingerprint, streams
// FORWARD chunks into worker 1 and collects RESULT frames from the last worker, with a deadline
// on every step. A failure names the stage; the next sequence reconnects.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "engine/checkpoint.h"
#include "engine/generator.h"
#include "engine/thread_pool.h"
#include "net/auth.h"
#include "net/connection.h"
#include "net/messages.h"

namespace dgpt::net {

// One step of one sequence through the workers, for metrics and benchmarks: the time from the
// first FORWARD sent to the last RESULT received, and what each stage reported for the chunk
// that ended the step (queue wait, compute). The rest of total_seconds is on the wire. Time in
// this process's --local-layers is counted apart, in local_seconds.
struct StepTimings {
  int rows = 0;
  double total_seconds = 0;
  std::vector<StageTiming> stages;
  double local_seconds = 0;  // computing --local-layers in this process
};

struct PipelineOptions {
  std::vector<std::string> workers;  // HOST:PORT, in chain order
  // "" or "even": split evenly; "auto": in proportion to what workers report (cores, memory);
  // "a:b,c:d,...": one range per worker, together covering the layers the coordinator does not
  // run itself.
  std::string layers;
  std::optional<LayerRange> local_layers;  // run here: a prefix [0, k) or a suffix [k, n)
  WireDType wire_dtype = WireDType::kF32;
  std::optional<AuthKey> auth_key;
  Duration timeout = std::chrono::seconds(60);  // per step, and for connecting
  int prefill_chunk = 128;                      // prompt rows per FORWARD frame
  uint32_t max_sequences = 0;                   // per worker; 0 = the worker's own limit
  std::string return_listen;                    // where the last stage connects back; default: auto
  std::string name = "coordinator";
  // Called (from the sequence's thread) after every successful step; must be thread-safe.
  std::function<void(const StepTimings&)> observe_step;
};

// Splits `n` layers into ranges in proportion to `weights` (largest remainder; every range gets
// at least one layer). REQUIRES: weights.size() <= n.
std::vector<LayerRange> ProportionalSplit(int first_layer, int n,
                                          const std::vector<double>& weights);

// Parses "a:b,c:d" into ranges; checks they are contiguous and cover [first, end).
Result<std::vector<LayerRange>> ParseLayerRanges(const std::string& spec, int first, int end,
                                                 size_t expected_count);

struct StageInfo {
  std::string address;
  std::string name;
  LayerRange layers;
  bool up = false;
  double last_latency_ms = 0;
};

// Many sequences may run through one pipeline at once, each from its own thread (a server runs
// one per request): their FORWARD frames interleave in the chain, so while stage 2 computes one
// sequence's step stage 1 computes another's, and each stage batches the decode steps it has
// queued. The Pipeline itself is also a BlockRunner for one sequence at a time (dgpt generate).
class Pipeline : public BlockRunner {
 public:
  // REQUIRES: `model` is a full checkpoint (for the stage fingerprints) or a coordinator shard
  // beside its manifest, loaded with embeddings, head and the local layers; it and `pool`
  // outlive the pipeline.
  static Result<std::unique_ptr<Pipeline>> Connect(const Checkpoint& model, ThreadPool& pool,
                                                   const PipelineOptions& options);
  ~Pipeline() override;

  // A runner for one more concurrent sequence. Thread-safe; the runner must not outlive the
  // pipeline. A failure of a stage (timeout, lost connection) fails every sequence in flight;
  // an error about one sequence (e.g. cache_full) fails only that one.
  std::unique_ptr<BlockRunner> NewSequence();

  Status Begin(int capacity) override;
  Status Forward(float* x, int T, bool all_rows) override;
  void End() override;

  // "stage 1: 127.0.0.1:7001 layers 0:4 | ..." plus local layers.
  std::string PlanDescription() const;
  // A snapshot: address, layers, up/down and last control round trip of every stage.
  std::vector<StageInfo> stages() const;
  // Pings every stage now (reconnecting first if needed) and returns the fresh snapshot.
  std::vector<StageInfo> CheckHealth();
  // STATS from every worker (reconnecting first if needed).
  Result<std::vector<StatsReply>> CollectStats();

  class Impl;

 private:
  explicit Pipeline(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
  std::unique_ptr<BlockRunner> default_sequence_;  // for the BlockRunner interface
};

}  // namespace dgpt::net
