// dgpt bench: a fixed workload (P random prompt tokens, G greedy tokens, C sequences at once) on
// a model in this process or through a pipeline, and where each decoded token's time goes: every
// stage's compute, queue wait and hops, the coordinator's embedding / LM head / sampling, and
// each stage's weight reads against the machine's memory bandwidth (the roofline). `--membw`
// only measures that bandwidth. What each figure means: docs/PERFORMANCE.md.
#include <fmt/format.h>
#include <signal.h>

#include <algorithm>
#include <cstdio>
#include <exception>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>

#include "engine/checkpoint.h"
#include "engine/generator.h"
#include "engine/ops.h"
#include "engine/resident_memory.h"
#include "net/coordinator.h"
#include "tools/bench/membw.h"
#include "tools/bench/report.h"
#include "tools/bench/sgemm_peak.h"
#include "tools/bench/workload.h"
#include "tools/cli_util.h"
#include "tools/commands.h"
#include "tools/local_workers.h"
#include "tools/pipeline_args.h"

namespace dgpt::cli {
namespace {

constexpr int kBandwidthRuns = 10;
constexpr double kBandwidthSeconds = 0.5;  // per thread count
constexpr int kMaxConcurrency = 256;

struct BenchArgs {
  std::string model_dir;
  WeightFormatArgs formats;
  bench::Workload workload;
  int threads = 0;
  int prefill_chunk = 128;
  bool json = false;
  std::string svg;
  bool membw = false;
  std::optional<double> membw_gbs;
  std::optional<int> membw_mib;
  PipelineArgs pipeline;
};

int ThreadCount(const BenchArgs& args) {
  return args.threads > 0 ? args.threads : DefaultThreadCount();
}

// The threads each --local-workers process gets (as MakePipelineOptions gives them).
int LocalWorkerThreads(const BenchArgs& args) {
  if (args.pipeline.worker_threads > 0) return args.pipeline.worker_threads;
  return std::max(1, ThreadCount(args) / std::max(1, args.pipeline.local_workers));
}

// Best-of-runs streaming-read bandwidth for each thread count.
Result<bench::BandwidthInfo> MeasureBandwidth(const BenchArgs& args, std::set<int> thread_counts) {
  const int64_t buffer =
      args.membw_mib ? int64_t{*args.membw_mib} << 20 : bench::DefaultBandwidthBufferBytes();
  auto meter = bench::BandwidthMeter::Create(buffer);
  if (!meter.ok()) return meter.status();
  bench::BandwidthInfo info;
  info.source = "measured";
  info.buffer_bytes = (*meter)->buffer_bytes();
  info.runs = kBandwidthRuns;
  info.min_seconds = kBandwidthSeconds;
  for (int threads : thread_counts) {
    info.by_threads.emplace_back(threads,
                                 (*meter)->Measure(threads, kBandwidthRuns, kBandwidthSeconds));
  }
  return info;
}

// The sgemm shapes --membw also measures: a 128-token prefill through a GPT-2 (124M) MLP
// matrix, and a large square product (BLAS's best case).
constexpr int kSgemmShapes[][3] = {{128, 3072, 768}, {1024, 1024, 1024}};

int RunMembw(const BenchArgs& args) {
  auto info = MeasureBandwidth(args, {1, ThreadCount(args)});
  if (!info.ok()) return ReportError("bench", info.status().message());
  std::vector<std::pair<int, double>> sgemm;  // (shape index, GFLOP/s) at ThreadCount threads
  for (int i = 0; i < 2; ++i) {
    sgemm.emplace_back(i, bench::MeasureSgemmGflops(kSgemmShapes[i][0], kSgemmShapes[i][1],
                                                    kSgemmShapes[i][2], ThreadCount(args)));
  }
  if (args.json) {
    nlohmann::json measured = nlohmann::json::array();
    for (const auto& [threads, gbs] : info->by_threads) {
      measured.push_back({{"threads", threads}, {"gbs", gbs}});
    }
    nlohmann::json peaks = nlohmann::json::array();
    for (const auto& [i, gflops] : sgemm) {
      peaks.push_back({{"m", kSgemmShapes[i][0]},
                       {"n", kSgemmShapes[i][1]},
                       {"k", kSgemmShapes[i][2]},
                       {"threads", ThreadCount(args)},
                       {"gflops", gflops}});
    }
    std::cout << nlohmann::json{{"buffer_bytes", info->buffer_bytes},
                                {"runs", info->runs},
                                {"min_seconds", info->min_seconds},
                                {"last_level_cache_bytes", bench::LastLevelCacheBytes()},
                                {"measured", measured},
                                {"sgemm", peaks}}
                     .dump()
              << std::endl;
    return 0;
  }
  std::printf(
      "memory bandwidth, streaming read of %lld MiB (last-level cache %lld MiB), best of >= %d "
      "runs over >= %.1f s:\n",
      static_cast<long long>(info->buffer_bytes >> 20),
      static_cast<long long>(bench::LastLevelCacheBytes() >> 20), info->runs, info->min_seconds);
  for (const auto& [threads, gbs] : info->by_threads) {
    std::printf("  %2d thread%s %6.1f GB/s\n", threads, threads == 1 ? ": " : "s:", gbs);
  }
  for (const auto& [i, gflops] : sgemm) {
    std::printf("sgemm %dx%dx%d (M x N x K), %d thread%s: %.1f GFLOP/s\n", kSgemmShapes[i][0],
                kSgemmShapes[i][1], kSgemmShapes[i][2], ThreadCount(args),
                ThreadCount(args) == 1 ? "" : "s", gflops);
  }
  return 0;
}

// Every worker's STATS, at one phase boundary.
using StatsSnapshot = std::vector<net::StatsReply>;

bench::StageCounters Delta(const StatsSnapshot& before, const StatsSnapshot& after, size_t i) {
  if (i >= before.size() || i >= after.size()) return {};
  return {after[i].compute_ns - before[i].compute_ns, after[i].tokens - before[i].tokens};
}

// The model and the blocks' runners, set up as dgpt generate does.
struct Session {
  int threads = 1;
  std::unique_ptr<ThreadPool> pool;
  std::unique_ptr<Checkpoint> model;
  std::optional<LayerRange> local_layers;  // --local-layers
  WeightFormat block_format = WeightFormat::kF32;
  std::unique_ptr<LocalWorkers> local_workers;
  std::unique_ptr<net::Pipeline> pipeline;  // declared after: disconnects before workers stop
  std::unique_ptr<LogitsBatcher> batcher;
  bench::WorkloadSetup setup;
  uint64_t resident_after_prefill = 0;  // this process's RSS with every sequence live
};

Status SetUp(const BenchArgs& args, Session& s) {
  const bench::Workload& workload = args.workload;
  s.threads = ThreadCount(args);
  SetBlasThreads(s.threads);
  s.pool = std::make_unique<ThreadPool>(s.threads);
  auto local_layers = LocalLayers(args.pipeline);
  if (!local_layers.ok()) return local_layers.status();
  s.local_layers = *local_layers;

  // With workers, this process maps the embeddings, the head and its own layers; the workers'
  // layers are only hashed for the fingerprints. No tokenizer: the prompts are random ids.
  LoadOptions load;
  DGPT_RETURN_IF_ERROR(ApplyWeightFormats(args.formats, &load));
  if (args.pipeline.used()) load.layers = s.local_layers.value_or(LayerRange{0, 0});
  auto model = Checkpoint::Load(args.model_dir, load);
  if (!model.ok()) return model.status();
  s.model = std::move(model).value();
  const ModelConfig& config = s.model->config();
  const int positions = workload.prompt_tokens + workload.generated_tokens - 1;
  if (positions > config.n_positions) {
    return Status::Error(fmt::format(
        "--prompt-tokens {} + --gen-tokens {} need {} positions but the model's context is {}",
        workload.prompt_tokens, workload.generated_tokens, positions, config.n_positions));
  }
  // What the blocks compute in: as loaded here, else what --dtype asks the local workers for,
  // else what the file stores (Checkpoint::Load's default). Remote workers choose their own.
  s.block_format = FormatAsStored(s.model->weight_dtype());
  if (load.weight_format) {
    s.block_format = *load.weight_format;
  } else if (s.model->layers().size() > 0) {
    s.block_format = s.model->weight_format();
  }

  s.setup.model = s.model.get();
  s.setup.pool = s.pool.get();
  if (workload.concurrency > 1) {  // as dgpt serve: concurrent sequences share LM head reads
    s.batcher = std::make_unique<LogitsBatcher>(*s.model, *s.pool);
    s.setup.logits_batcher = s.batcher.get();
  }
  if (!args.pipeline.used()) {
    s.setup.new_runner = [&s, chunk = args.prefill_chunk]() -> std::unique_ptr<BlockRunner> {
      return std::make_unique<LocalBlockRunner>(*s.model, *s.pool, chunk);
    };
    return Status::Ok();
  }
  auto options =
      MakePipelineOptions(args.pipeline, args.formats, args.model_dir, args.prefill_chunk,
                          s.threads, std::max(16, workload.concurrency), &s.local_workers);
  if (!options.ok()) return options.status();
  options->name = "bench";
  options->observe_step = bench::RecordPipelineStep;
  auto connected = net::Pipeline::Connect(*s.model, *s.pool, *options);
  if (!connected.ok()) return connected.status();
  s.pipeline = std::move(connected).value();
  s.setup.new_runner = [&s] { return s.pipeline->NewSequence(); };
  return Status::Ok();
}

// Coordinator, local blocks, workers: what each is and which bandwidth it is held against.
std::vector<bench::StageSpec> DescribeStages(const BenchArgs& args, const Session& s,
                                             const bench::BandwidthInfo& bandwidth,
                                             const std::vector<StatsSnapshot>& snapshots) {
  const int worker_threads = LocalWorkerThreads(args);
  auto measured = [&](int threads) {
    for (const auto& [count, gbs] : bandwidth.by_threads) {
      if (count == threads) return gbs;
    }
    return 0.0;
  };
  const bool given = args.membw_gbs.has_value();
  const std::string here = given ? "--membw-gbs" : "measured here";
  std::vector<bench::StageSpec> stages;

  bench::StageSpec coordinator;
  coordinator.kind = bench::StageKind::kCoordinator;
  coordinator.name = "coordinator";
  coordinator.format = s.model->lm_head().format;
  coordinator.threads = s.threads;
  coordinator.bandwidth_gbs = given ? *args.membw_gbs : measured(s.threads);
  coordinator.bandwidth_source = here;
  stages.push_back(coordinator);

  const std::optional<LayerRange> local =
      s.pipeline ? s.local_layers : LayerRange{0, s.model->config().n_layer};
  if (local) {
    bench::StageSpec spec = coordinator;
    spec.kind = bench::StageKind::kLocal;
    spec.name = "local";
    spec.layers = *local;
    spec.format = s.block_format;
    spec.local_is_prefix = local->begin == 0;
    spec.resident_bytes = s.resident_after_prefill;
    spec.matrix_bytes = static_cast<uint64_t>(s.model->matrix_bytes());
    stages.push_back(spec);
  }
  if (!s.pipeline) return stages;
  const std::vector<net::StageInfo> infos = s.pipeline->stages();
  for (size_t i = 0; i < infos.size(); ++i) {
    bench::StageSpec spec;
    spec.kind = bench::StageKind::kWorker;
    spec.name = fmt::format("stage {}", i + 1);
    spec.address = infos[i].address;
    spec.layers = infos[i].layers;
    spec.format = s.block_format;
    const net::StatsReply& last = snapshots.back()[i];
    if (last.weight_bytes > 0 && last.weight_format <= static_cast<uint32_t>(WeightFormat::kQ8_0)) {
      spec.format = static_cast<WeightFormat>(last.weight_format);  // what the worker reports
    }
    if (given) {
      spec.bandwidth_gbs = *args.membw_gbs;
      spec.bandwidth_source = here;
    } else if (s.local_workers && i >= args.pipeline.workers.size()) {
      spec.threads = worker_threads;
      spec.bandwidth_gbs = measured(worker_threads);
      spec.bandwidth_source = here;
    } else {  // a remote machine: this one's figure is only a stand-in
      spec.bandwidth_gbs = measured(s.threads);
      spec.bandwidth_source =
          "this machine's bandwidth (not the worker's: pass --membw-gbs measured there)";
    }
    const net::StatsReply& live = snapshots[1][i];  // after prefill: every sequence's KV held
    spec.resident_bytes = live.resident_bytes;
    spec.matrix_bytes = live.weight_bytes;
    spec.kv_cache_bytes = live.kv_cache_bytes;
    spec.prefill = Delta(snapshots[0], snapshots[1], i);
    spec.decode = Delta(snapshots[1], snapshots[2], i);
    stages.push_back(spec);
  }
  return stages;
}

Status Bench(const BenchArgs& args) {
  std::ofstream svg;  // opened first: a bad path fails before the run, not after
  if (!args.svg.empty()) {
    svg.open(args.svg, std::ios::binary | std::ios::trunc);
    if (!svg) return Status::Error("cannot write " + args.svg);
  }
  Session s;
  DGPT_RETURN_IF_ERROR(SetUp(args, s));

  // Bandwidth while nothing runs: after connecting (fail fast), before the warm-up.
  bench::BandwidthInfo bandwidth;
  if (args.membw_gbs) {
    bandwidth.source = "--membw-gbs";
    bandwidth.given_gbs = *args.membw_gbs;
  } else {
    std::set<int> counts = {s.threads};
    if (s.local_workers) counts.insert(LocalWorkerThreads(args));
    auto info = MeasureBandwidth(args, counts);
    if (!info.ok()) return info.status();
    bandwidth = *info;
  }

  // Warm-up (connections, page faults, caches), not measured.
  double ignored = 0;
  bench::Workload warmup = args.workload;
  warmup.prompt_tokens = std::min(warmup.prompt_tokens, 8);
  warmup.generated_tokens = std::min(warmup.generated_tokens, 4);
  warmup.concurrency = 1;
  if (auto warm = bench::RunWorkload(s.setup, warmup, &ignored); !warm.ok()) return warm.status();

  std::vector<StatsSnapshot> snapshots;  // workers' counters at each phase boundary
  s.setup.at_phase = [&](bench::Phase phase) -> Status {
    if (phase == bench::Phase::kBeforeDecode) s.resident_after_prefill = ResidentMemoryBytes();
    if (s.pipeline) {
      auto stats = s.pipeline->CollectStats();
      if (!stats.ok()) return stats.status();
      snapshots.push_back(std::move(stats).value());
    }
    return Status::Ok();
  };
  bench::ReportInput input;
  auto traces = bench::RunWorkload(s.setup, args.workload, &input.decode_start);
  if (!traces.ok()) return traces.status();
  if (s.pipeline && snapshots.size() != 3) {
    return Status::Error("internal: missing stage counters");
  }

  input.model_dir = args.model_dir;
  input.config = s.model->config();
  input.workload = args.workload;
  input.threads = s.threads;
  input.prefill_chunk = args.prefill_chunk;
  input.pipeline = s.pipeline != nullptr;
  input.plan = s.pipeline ? s.pipeline->PlanDescription()
                          : fmt::format("all {} layers in this process", input.config.n_layer);
  input.bandwidth = bandwidth;
  input.stages = DescribeStages(args, s, bandwidth, snapshots);
  input.traces = std::move(traces).value();
  auto report = bench::Analyze(std::move(input));
  if (!report.ok()) return report.status();

  if (svg.is_open()) {
    svg << bench::ReportSvg(*report);
    if (!svg.flush()) return Status::Error("cannot write " + args.svg);
  }
  if (args.json) {
    std::cout << bench::ReportJson(*report).dump(-1, ' ', false,
                                                 nlohmann::json::error_handler_t::replace)
              << std::endl;
  } else {
    std::cout << bench::ReportText(*report) << std::flush;
  }
  return Status::Ok();
}

// Range checks the command line cannot express, as one-line errors.
Status CheckArgs(const BenchArgs& args) {
  const bench::Workload& w = args.workload;
  if (w.prompt_tokens < 1) return Status::Error("--prompt-tokens must be >= 1");
  if (w.generated_tokens < 2) {
    return Status::Error(
        "--gen-tokens must be >= 2 (the first token comes from the prefill; decode needs more)");
  }
  if (w.concurrency < 1 || w.concurrency > kMaxConcurrency) {
    return Status::Error(fmt::format("--concurrency must be in 1..{}", kMaxConcurrency));
  }
  if (args.threads < 0) return Status::Error("--threads must be >= 0 (0 = all cores)");
  if (args.prefill_chunk < 1) return Status::Error("--prefill-chunk must be >= 1");
  if (args.membw_gbs && !(*args.membw_gbs > 0)) return Status::Error("--membw-gbs must be > 0");
  if (args.membw_mib && (*args.membw_mib < 1 || *args.membw_mib > (1 << 20))) {
    return Status::Error("--membw-mib must be in 1..1048576");
  }
  return Status::Ok();
}

int RunBench(const BenchArgs& args) {
  signal(SIGPIPE, SIG_IGN);  // a dead worker is an error message, not a silent exit
  try {
    if (Status status = CheckArgs(args); !status.ok()) {
      return ReportError("bench", status.message());
    }
    if (args.membw) return RunMembw(args);
    if (args.model_dir.empty()) return ReportError("bench", "--model is required (or --membw)");
    if (Status status = Bench(args); !status.ok()) return ReportError("bench", status.message());
    return 0;
  } catch (const std::exception& e) {  // e.g. out of memory, or no thread could be started
    return ReportError("bench", e.what());
  }
}

}  // namespace

void AddBenchCommand(CLI::App& app, CommandRunner* runner) {
  auto args = std::make_shared<BenchArgs>();
  CLI::App* cmd = app.add_subcommand(
      "bench",
      "Measure where the time goes: per-stage compute, queue and hops, the coordinator, "
      "end-to-end latency and throughput, and each stage's weight reads against the memory "
      "bandwidth (docs/PERFORMANCE.md)");
  cmd->add_option("--model,-m", args->model_dir,
                  "Model folder (config.json, model.safetensors; no tokenizer needed)");
  cmd->add_option("--prompt-tokens,-P", args->workload.prompt_tokens,
                  "Prompt length P (random token ids)")
      ->capture_default_str();
  cmd->add_option("--gen-tokens,-G", args->workload.generated_tokens,
                  "Tokens G to generate per sequence (greedy, never stops early); the first comes "
                  "from the prefill, the other G-1 are decode steps")
      ->capture_default_str();
  cmd->add_option("--concurrency,-C", args->workload.concurrency,
                  "Sequences C run at once (their decode steps batch in each worker)")
      ->capture_default_str();
  cmd->add_option("--seed", args->workload.seed, "Seed of the random prompts")
      ->capture_default_str();
  cmd->add_option("--threads", args->threads, "Threads (default: all cores)");
  cmd->add_option("--prefill-chunk", args->prefill_chunk, "Prompt tokens per forward chunk")
      ->capture_default_str();
  AddWeightFormatOptions(cmd, &args->formats, /*with_head=*/true);
  cmd->add_flag("--json", args->json, "Print one JSON object (keys: docs/PERFORMANCE.md)");
  cmd->add_option("--svg", args->svg,
                  "Write the mean decode step's breakdown as an SVG stacked bar chart");
  cmd->add_flag("--membw", args->membw,
                "Only measure this machine's memory bandwidth (1 thread and all threads)");
  cmd->add_option("--membw-gbs", args->membw_gbs,
                  "Memory bandwidth in GB/s for the roofline instead of measuring it (e.g. "
                  "measured with --membw on the target machine)");
  cmd->add_option("--membw-mib", args->membw_mib,
                  "Bandwidth buffer size in MiB (default: 8x the last-level cache, >= 256)");
  AddPipelineOptions(cmd, &args->pipeline);
  cmd->callback([args, runner] { *runner = [args] { return RunBench(*args); }; });
}

}  // namespace dgpt::cli
