// Turns the traces of a `dgpt bench` run into its figures — per stage (compute per token in
// prefill and decode, queue wait, hop time, weight bytes, roofline) and end to end (time to
// first token, decode tokens/s, per-token latency percentiles) — and prints them as a table,
// JSON (keys in docs/PERFORMANCE.md) or the SVG breakdown of a decode step.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "engine/checkpoint.h"
#include "tools/bench/roofline.h"
#include "tools/bench/svg_chart.h"
#include "tools/bench/workload.h"

namespace dgpt::bench {

// A worker's STATS counters, as the difference between two phase boundaries.
struct StageCounters {
  uint64_t compute_ns = 0;
  uint64_t tokens = 0;
};

enum class StageKind {
  kCoordinator,  // embedding, final norm + LM head, sampling
  kLocal,        // blocks computed in this process (all of them without workers)
  kWorker,
};

struct StageSpec {
  StageKind kind = StageKind::kWorker;
  std::string name;                          // "coordinator", "local", "stage 1", ...
  std::string address;                       // HOST:PORT of a worker; "" in this process
  LayerRange layers;                         // empty for the coordinator
  WeightFormat format = WeightFormat::kF32;  // of its matrices (the coordinator: the LM head)
  int threads = 0;                           // 0: unknown (a remote worker)
  double bandwidth_gbs = 0;                  // memory bandwidth to compare with; 0: unknown
  std::string bandwidth_source;              // "measured here", "--membw-gbs", ...
  bool local_is_prefix = true;               // kLocal with workers: before them, or after
  StageCounters prefill, decode;             // kWorker only
  // Memory while the sequences are live (after prefill), from the worker's STATS or, for
  // kLocal, this process; 0 = unknown. kLocal's process also holds the coordinator's parts.
  uint64_t resident_bytes = 0;
  uint64_t matrix_bytes = 0;    // packed weight matrices the process holds
  uint64_t kv_cache_bytes = 0;  // workers only
};

struct BandwidthInfo {
  std::string source;        // "measured" or "--membw-gbs"
  int64_t buffer_bytes = 0;  // measured only
  int runs = 0;              // measured only: at least this many runs per thread count
  double min_seconds = 0;    // measured only: ... and for at least this long
  std::vector<std::pair<int, double>> by_threads;  // (threads, GB/s), measured only
  double given_gbs = 0;                            // --membw-gbs only
};

struct ReportInput {
  std::string model_dir;
  ModelConfig config;
  Workload workload;
  int threads = 1;
  int prefill_chunk = 128;
  bool pipeline = false;
  std::string plan;
  BandwidthInfo bandwidth;
  // Coordinator first, then kLocal if any, then the workers in chain order.
  std::vector<StageSpec> stages;
  std::vector<SequenceTrace> traces;
  double decode_start = 0;  // all sequences had their first token
};

struct StageFigures {
  StageSpec spec;
  double prefill_ms_per_token = 0;  // stage busy time in prefill / prompt tokens
  double decode_ms_per_token = 0;   // stage busy time in decode / decoded tokens
  double decode_ms_per_step = 0;    // mean compute of one sequence's decode step
  std::optional<double> queue_ms;   // workers: mean wait before computing a decode step
  std::optional<double> hop_ms;     // the hop into this stage (coordinator: the hop back)
  std::optional<double> batch;      // rows per decode step; unknown for a batched LM head
  int64_t weight_bytes_per_step = 0;
  std::optional<double> weight_bytes_per_token;
  std::optional<Roofline> roofline;
  // Coordinator only, mean per decode step.
  double embed_ms = 0, lm_head_ms = 0, sampling_ms = 0;
};

struct HopFigures {
  int count = 0;        // workers + 1
  double total_ms = 0;  // per decode step: round trip - every stage's queue and compute
  double per_hop_ms = 0;
};

struct EndToEnd {
  double ttft_ms = 0, ttft_max_ms = 0;
  double prefill_tokens_per_second = 0;
  double decode_tokens_per_second = 0;
  double latency_mean_ms = 0, latency_p50_ms = 0, latency_p95_ms = 0, latency_p99_ms = 0;
  int64_t prompt_tokens = 0, generated_tokens = 0, decode_tokens = 0;
};

struct BenchReport {
  ReportInput input;
  std::vector<StageFigures> stages;
  std::optional<HopFigures> hops;
  EndToEnd end_to_end;
  std::vector<ChartSegment> breakdown;  // mean decode step of one sequence, ms; sums to latency
};

// Checks the traces are complete (an error names what is missing) and computes the figures.
Result<BenchReport> Analyze(ReportInput input);

nlohmann::json ReportJson(const BenchReport& report);
std::string ReportText(const BenchReport& report);
std::string ReportSvg(const BenchReport& report);

}  // namespace dgpt::bench
