#include "tools/bench/report.h"

#include <fmt/format.h>

#include <algorithm>
#include <numeric>

#include "tools/bench/stats.h"

namespace dgpt::bench {

namespace {

constexpr double kMs = 1e3;

std::string LayersText(LayerRange layers) {
  return layers.size() > 0 ? fmt::format("{}:{}", layers.begin, layers.end) : "-";
}

const char* KindName(StageKind kind) {
  switch (kind) {
    case StageKind::kCoordinator:
      return "coordinator";
    case StageKind::kLocal:
      return "local";
    case StageKind::kWorker:
      return "worker";
  }
  return "?";
}

// Every decode step of every sequence: (sequence, step) with step in [1, G).
template <typename Fn>
void ForEachDecodeStep(const ReportInput& in, Fn&& fn) {
  for (const SequenceTrace& trace : in.traces) {
    for (size_t k = 1; k < trace.token_in.size(); ++k) fn(trace, k);
  }
}

Status CheckTraces(const ReportInput& in, size_t workers) {
  const size_t G = static_cast<size_t>(in.workload.generated_tokens);
  for (size_t s = 0; s < in.traces.size(); ++s) {
    const SequenceTrace& t = in.traces[s];
    const bool complete = t.forwards.size() == G && t.logits.size() == G &&
                          t.token_in.size() == G && t.token_out.size() == G &&
                          (!in.pipeline || t.steps.size() == G);
    if (!complete) {
      return Status::Error(fmt::format(
          "internal: sequence {} recorded {} forwards, {} steps, {} logits, {} tokens for {} "
          "tokens",
          s, t.forwards.size(), t.steps.size(), t.logits.size(), t.token_in.size(), G));
    }
    for (const net::StepTimings& step : t.steps) {
      if (step.stages.size() != workers) {
        return Status::Error(fmt::format("the pipeline reported {} stage timings for {} workers",
                                         step.stages.size(), workers));
      }
    }
  }
  if (in.traces.empty() || G < 2) return Status::Error("internal: no decode steps to analyze");
  return Status::Ok();
}

}  // namespace

namespace {

// Every decode step of every sequence, taken apart (seconds).
struct StepSamples {
  // Per step of one sequence: the latency view.
  std::vector<double> embed, lm_head, sampling, latency, local, wire;
  std::vector<std::vector<double>> stage_compute, stage_queue;  // [worker][step]
  // When each part of this process was busy, over all sequences: the throughput view.
  std::vector<Interval> coordinator_busy, local_busy;
};

StepSamples CollectSteps(const ReportInput& in, size_t workers) {
  StepSamples s;
  s.stage_compute.resize(workers);
  s.stage_queue.resize(workers);
  ForEachDecodeStep(in, [&](const SequenceTrace& t, size_t k) {
    const Interval& forward = t.forwards[k];
    s.embed.push_back(forward.begin - t.token_out[k - 1]);
    s.lm_head.push_back(t.logits[k] - forward.end);
    s.sampling.push_back(t.token_in[k] - t.logits[k]);
    s.latency.push_back(t.token_in[k] - t.token_out[k - 1]);
    s.coordinator_busy.push_back({t.token_out[k - 1], forward.begin});
    s.coordinator_busy.push_back({forward.end, t.token_in[k]});
    if (!in.pipeline) {  // the forward pass is the blocks, in this process
      s.local.push_back(forward.end - forward.begin);
      s.local_busy.push_back(forward);
      return;
    }
    const net::StepTimings& step = t.steps[k];
    s.local.push_back(step.local_seconds);
    double accounted = 0;
    for (size_t i = 0; i < workers; ++i) {
      s.stage_compute[i].push_back(step.stages[i].compute_ns / 1e9);
      s.stage_queue[i].push_back(step.stages[i].queue_ns / 1e9);
      accounted += (step.stages[i].compute_ns + step.stages[i].queue_ns) / 1e9;
    }
    s.wire.push_back(std::max(0.0, step.total_seconds - accounted));
  });
  return s;
}

// One stage's row. `worker` indexes the workers (kWorker only).
StageFigures FiguresOf(const StageSpec& spec, size_t worker, const ReportInput& in,
                       const StepSamples& s, const std::optional<HopFigures>& hops) {
  const double P = in.workload.prompt_tokens, C = in.workload.concurrency;
  const double decode_tokens = C * (in.workload.generated_tokens - 1);
  StageFigures f;
  f.spec = spec;
  f.weight_bytes_per_step = DecodeWeightBytes(in.config, spec.layers.size(), spec.format,
                                              spec.kind == StageKind::kCoordinator);
  if (hops && spec.kind != StageKind::kLocal) f.hop_ms = hops->per_hop_ms;
  double seconds_per_step = 0;  // for the roofline: one read of the weights
  switch (spec.kind) {
    case StageKind::kCoordinator: {
      double prefill = 0;  // the prompt's embedding, the first token's LM head and sampling
      for (const SequenceTrace& t : in.traces) {
        prefill += (t.forwards[0].begin - t.begun) + (t.token_in[0] - t.forwards[0].end);
      }
      f.prefill_ms_per_token = prefill / (C * P) * kMs;
      f.decode_ms_per_token = UnionSeconds(s.coordinator_busy) / decode_tokens * kMs;
      f.embed_ms = Mean(s.embed) * kMs;
      f.lm_head_ms = Mean(s.lm_head) * kMs;
      f.sampling_ms = Mean(s.sampling) * kMs;
      f.decode_ms_per_step = f.embed_ms + f.lm_head_ms + f.sampling_ms;
      // Concurrent sequences share LM head reads (LogitsBatcher) in batches the bench cannot
      // see, so only a lone sequence has a known batch.
      if (C == 1) {
        f.batch = 1;
        seconds_per_step = Mean(s.lm_head);  // the only part that reads weights
      }
      break;
    }
    case StageKind::kLocal: {
      double prefill = 0;
      if (in.pipeline) {
        for (const SequenceTrace& t : in.traces) prefill += t.steps[0].local_seconds;
        f.decode_ms_per_token =
            std::accumulate(s.local.begin(), s.local.end(), 0.0) / decode_tokens * kMs;
      } else {
        std::vector<Interval> prompts;
        for (const SequenceTrace& t : in.traces) prompts.push_back(t.forwards[0]);
        prefill = UnionSeconds(prompts);
        f.decode_ms_per_token = UnionSeconds(s.local_busy) / decode_tokens * kMs;
      }
      f.prefill_ms_per_token = prefill / (C * P) * kMs;
      f.decode_ms_per_step = Mean(s.local) * kMs;
      f.batch = 1;  // sequences in one process do not batch their blocks
      seconds_per_step = f.decode_ms_per_token / kMs;
      break;
    }
    case StageKind::kWorker: {
      const std::vector<double>& compute = s.stage_compute[worker];
      const double busy = spec.decode.compute_ns / 1e9;
      f.prefill_ms_per_token =
          spec.prefill.tokens ? spec.prefill.compute_ns / 1e6 / spec.prefill.tokens : 0;
      f.decode_ms_per_token =
          spec.decode.tokens ? busy / spec.decode.tokens * kMs : Mean(compute) * kMs;
      f.decode_ms_per_step = Mean(compute) * kMs;
      f.queue_ms = Mean(s.stage_queue[worker]) * kMs;
      // Each step of a batch reports the batch's compute time, so the steps' sum over the
      // stage's busy time is the (time-weighted) mean batch.
      const double summed = std::accumulate(compute.begin(), compute.end(), 0.0);
      f.batch = busy > 0 ? std::clamp(summed / busy, 1.0, C) : 1.0;
      seconds_per_step = f.decode_ms_per_token / kMs * *f.batch;
      break;
    }
  }
  if (f.batch) {
    f.weight_bytes_per_token = f.weight_bytes_per_step / *f.batch;
    f.roofline = ComputeRoofline(static_cast<double>(f.weight_bytes_per_step), seconds_per_step,
                                 spec.bandwidth_gbs);
  }
  return f;
}

EndToEnd EndToEndOf(const ReportInput& in, const StepSamples& s) {
  const Workload& w = in.workload;
  const double P = w.prompt_tokens, C = w.concurrency;
  const double decode_tokens = C * (w.generated_tokens - 1);
  EndToEnd e;
  std::vector<double> ttft;
  double first_start = in.traces[0].start, prefill_end = 0, last_token = 0;
  for (const SequenceTrace& t : in.traces) {
    ttft.push_back(t.token_in[0] - t.start);
    first_start = std::min(first_start, t.start);
    prefill_end = std::max(prefill_end, t.forwards[0].end);
    last_token = std::max(last_token, t.token_in.back());
  }
  e.ttft_ms = Mean(ttft) * kMs;
  e.ttft_max_ms = *std::max_element(ttft.begin(), ttft.end()) * kMs;
  e.prompt_tokens = static_cast<int64_t>(C * P);
  e.generated_tokens = static_cast<int64_t>(C) * w.generated_tokens;
  e.decode_tokens = static_cast<int64_t>(decode_tokens);
  e.prefill_tokens_per_second = C * P / std::max(prefill_end - first_start, 1e-12);
  e.decode_tokens_per_second = decode_tokens / std::max(last_token - in.decode_start, 1e-12);
  e.latency_mean_ms = Mean(s.latency) * kMs;
  e.latency_p50_ms = Percentile(s.latency, 50) * kMs;
  e.latency_p95_ms = Percentile(s.latency, 95) * kMs;
  e.latency_p99_ms = Percentile(s.latency, 99) * kMs;
  return e;
}

// The mean decode step of one sequence, in the order its time passes; "other" makes the parts
// add up to the measured latency.
std::vector<ChartSegment> Breakdown(const ReportInput& in, const StepSamples& s,
                                    const std::optional<HopFigures>& hops, double latency_ms) {
  static constexpr const char* kStageColors[] = {"#4e79a7", "#2f5f8a", "#7aa6d6",
                                                 "#1d3f66", "#a0c4e8", "#3d6fa0"};
  std::vector<ChartSegment> parts;
  parts.push_back({"coordinator: embedding", Mean(s.embed) * kMs, "#8cd17d"});
  auto add_local = [&](bool before_workers) {
    for (const StageSpec& spec : in.stages) {
      if (spec.kind != StageKind::kLocal) continue;
      if (in.pipeline && spec.local_is_prefix != before_workers) continue;
      if (!in.pipeline && !before_workers) continue;
      parts.push_back({fmt::format("{} {} (this process)", in.pipeline ? "local layers" : "blocks",
                                   LayersText(spec.layers)),
                       Mean(s.local) * kMs, "#76b7b2"});
    }
  };
  add_local(/*before_workers=*/true);
  size_t n = 0;
  for (const StageSpec& spec : in.stages) {
    if (spec.kind != StageKind::kWorker) continue;
    parts.push_back({fmt::format("{} compute (layers {})", spec.name, LayersText(spec.layers)),
                     Mean(s.stage_compute[n]) * kMs, kStageColors[n % std::size(kStageColors)]});
    ++n;
  }
  if (hops) {
    double queue = 0;
    for (const std::vector<double>& waits : s.stage_queue) queue += Mean(waits);
    parts.push_back({"queue (all stages)", queue * kMs, "#f28e2b"});
    parts.push_back(
        {fmt::format("hops x{} (serialize + network)", hops->count), hops->total_ms, "#e15759"});
  }
  add_local(/*before_workers=*/false);
  parts.push_back({"coordinator: LM head", Mean(s.lm_head) * kMs, "#59a14f"});
  parts.push_back({"coordinator: sampling", Mean(s.sampling) * kMs, "#b6d7a8"});
  double accounted = 0;
  for (const ChartSegment& part : parts) accounted += part.value;
  parts.push_back(
      {"other (threads, bookkeeping)", std::max(0.0, latency_ms - accounted), "#bab0ac"});
  return parts;
}

}  // namespace

Result<BenchReport> Analyze(ReportInput in) {
  size_t workers = 0;
  for (const StageSpec& spec : in.stages) workers += spec.kind == StageKind::kWorker;
  DGPT_RETURN_IF_ERROR(CheckTraces(in, workers));
  const StepSamples samples = CollectSteps(in, workers);

  BenchReport report;
  if (in.pipeline) {
    HopFigures hops;
    hops.count = static_cast<int>(workers) + 1;
    hops.total_ms = Mean(samples.wire) * kMs;
    hops.per_hop_ms = hops.total_ms / hops.count;
    report.hops = hops;
  }
  size_t worker = 0;
  for (const StageSpec& spec : in.stages) {
    report.stages.push_back(FiguresOf(spec, worker, in, samples, report.hops));
    worker += spec.kind == StageKind::kWorker;
  }
  report.end_to_end = EndToEndOf(in, samples);
  report.breakdown = Breakdown(in, samples, report.hops, report.end_to_end.latency_mean_ms);
  report.input = std::move(in);
  return report;
}

// 2 FLOPs per weight of the blocks' four matrices (12 C^2 per layer) per prompt token: what
// prefill's sgemm calls compute (attention and the LM head's last row are left out).
double PrefillFlopsPerToken(const ReportInput& in) {
  const double C = in.config.n_embd;
  return 2.0 * 12.0 * C * C * in.config.n_layer;
}

nlohmann::json ReportJson(const BenchReport& report) {
  using nlohmann::json;
  const ReportInput& in = report.input;
  auto optional = [](const std::optional<double>& value) -> json {
    return value ? json(*value) : json(nullptr);
  };
  json stages = json::array();
  for (const StageFigures& f : report.stages) {
    json stage = {
        {"name", f.spec.name},
        {"kind", KindName(f.spec.kind)},
        {"address", f.spec.address},
        {"layers", f.spec.layers.size() > 0 ? json::array({f.spec.layers.begin, f.spec.layers.end})
                                            : json(nullptr)},
        {"weight_format", std::string(WeightFormatName(f.spec.format))},
        {"threads", f.spec.threads > 0 ? json(f.spec.threads) : json(nullptr)},
        {"prefill_ms_per_token", f.prefill_ms_per_token},
        {"decode_ms_per_token", f.decode_ms_per_token},
        {"decode_ms_per_step", f.decode_ms_per_step},
        {"queue_ms", optional(f.queue_ms)},
        {"hop_ms", optional(f.hop_ms)},
        {"batch", optional(f.batch)},
        {"weight_bytes_per_step", f.weight_bytes_per_step},
        {"weight_bytes_per_token", optional(f.weight_bytes_per_token)},
        {"bandwidth_gbs", f.spec.bandwidth_gbs > 0 ? json(f.spec.bandwidth_gbs) : json(nullptr)},
        {"bandwidth_source", f.spec.bandwidth_source},
        {"achieved_gbs", f.roofline ? json(f.roofline->achieved_gbs) : json(nullptr)},
        {"roofline_percent", f.roofline && f.spec.bandwidth_gbs > 0
                                 ? json(f.roofline->roofline_percent)
                                 : json(nullptr)},
    };
    if (f.spec.resident_bytes > 0) {
      stage["resident_bytes"] = f.spec.resident_bytes;
      stage["matrix_bytes"] = f.spec.matrix_bytes;
      stage["kv_cache_bytes"] = f.spec.kv_cache_bytes;
    }
    if (f.spec.kind == StageKind::kCoordinator) {
      stage["embed_ms"] = f.embed_ms;
      stage["lm_head_ms"] = f.lm_head_ms;
      stage["sampling_ms"] = f.sampling_ms;
    }
    stages.push_back(std::move(stage));
  }
  json bandwidth = {{"source", in.bandwidth.source}};
  if (in.bandwidth.source == "measured") {
    bandwidth["buffer_bytes"] = in.bandwidth.buffer_bytes;
    bandwidth["runs"] = in.bandwidth.runs;
    bandwidth["min_seconds"] = in.bandwidth.min_seconds;
    json measured = json::array();
    for (const auto& [threads, gbs] : in.bandwidth.by_threads) {
      measured.push_back({{"threads", threads}, {"gbs", gbs}});
    }
    bandwidth["measured"] = measured;
  } else {
    bandwidth["gbs"] = in.bandwidth.given_gbs;
  }
  json breakdown = json::array();
  for (const ChartSegment& part : report.breakdown) {
    breakdown.push_back({{"label", part.label}, {"ms", part.value}});
  }
  const EndToEnd& e = report.end_to_end;
  json out = {
      {"model", in.model_dir},
      {"config",
       {{"n_layer", in.config.n_layer},
        {"n_head", in.config.n_head},
        {"n_embd", in.config.n_embd},
        {"n_positions", in.config.n_positions},
        {"vocab_size", in.config.vocab_size}}},
      {"mode", in.pipeline ? "pipeline" : "local"},
      {"plan", in.plan},
      {"workload",
       {{"prompt_tokens", in.workload.prompt_tokens},
        {"generated_tokens", in.workload.generated_tokens},
        {"concurrency", in.workload.concurrency},
        {"seed", in.workload.seed},
        {"threads", in.threads},
        {"prefill_chunk", in.prefill_chunk}}},
      {"bandwidth", bandwidth},
      {"stages", stages},
      {"hops", report.hops ? json{{"count", report.hops->count},
                                  {"total_ms", report.hops->total_ms},
                                  {"per_hop_ms", report.hops->per_hop_ms},
                                  {"apportioned", "evenly"}}
                           : json(nullptr)},
      {"end_to_end",
       {{"ttft_ms", e.ttft_ms},
        {"ttft_max_ms", e.ttft_max_ms},
        {"prefill_tokens_per_second", e.prefill_tokens_per_second},
        {"prefill_gflops", e.prefill_tokens_per_second * PrefillFlopsPerToken(in) / 1e9},
        {"decode_tokens_per_second", e.decode_tokens_per_second},
        {"prompt_tokens", e.prompt_tokens},
        {"generated_tokens", e.generated_tokens},
        {"decode_tokens", e.decode_tokens},
        {"per_token_latency_ms",
         {{"mean", e.latency_mean_ms},
          {"p50", e.latency_p50_ms},
          {"p95", e.latency_p95_ms},
          {"p99", e.latency_p99_ms}}}}},
      {"decode_breakdown_ms", breakdown},
  };
  return out;
}

namespace {

std::string Cell(const std::optional<double>& value, int decimals) {
  return value ? fmt::format("{:.{}f}", *value, decimals) : "-";
}

}  // namespace

std::string ReportText(const BenchReport& report) {
  const ReportInput& in = report.input;
  const Workload& w = in.workload;
  std::string out = fmt::format(
      "model: {} ({} layers, n_embd {}, vocab {})\n"
      "workload: {} prompt tokens + {} generated, {} sequence{} at once, {} threads, seed {}\n"
      "plan: {}\n",
      in.model_dir, in.config.n_layer, in.config.n_embd, in.config.vocab_size, w.prompt_tokens,
      w.generated_tokens, w.concurrency, w.concurrency == 1 ? "" : "s", in.threads, w.seed,
      in.plan);
  if (in.bandwidth.source == "measured") {
    std::string figures;
    for (const auto& [threads, gbs] : in.bandwidth.by_threads) {
      figures += fmt::format("{}{:.1f} GB/s with {} thread{}", figures.empty() ? "" : ", ", gbs,
                             threads, threads == 1 ? "" : "s");
    }
    out += fmt::format("memory bandwidth: {} (streaming read of {} MiB, best of >= {} runs)\n",
                       figures, in.bandwidth.buffer_bytes >> 20, in.bandwidth.runs);
  } else {
    out += fmt::format("memory bandwidth: {:.1f} GB/s (--membw-gbs)\n", in.bandwidth.given_gbs);
  }

  out += fmt::format("\n{:<12} {:>6} {:>6} {:>14} {:>13} {:>8} {:>7} {:>6} {:>13} {:>7} {:>10}\n",
                     "stage", "layers", "dtype", "prefill ms/tok", "decode ms/tok", "queue ms",
                     "hop ms", "batch", "weight MB/tok", "GB/s", "roofline %");
  for (const StageFigures& f : report.stages) {
    const bool has_bw = f.roofline && f.spec.bandwidth_gbs > 0;
    std::optional<double> megabytes;
    if (f.weight_bytes_per_token) megabytes = *f.weight_bytes_per_token / 1e6;
    out += fmt::format(
        "{:<12} {:>6} {:>6} {:>14.3f} {:>13.3f} {:>8} {:>7} {:>6} {:>13} {:>7} {:>10}\n",
        f.spec.name, LayersText(f.spec.layers), WeightFormatName(f.spec.format),
        f.prefill_ms_per_token, f.decode_ms_per_token, Cell(f.queue_ms, 3), Cell(f.hop_ms, 3),
        Cell(f.batch, 2), Cell(megabytes, megabytes && *megabytes < 10 ? 3 : 1),
        f.roofline ? fmt::format("{:.1f}", f.roofline->achieved_gbs) : "-",
        has_bw ? fmt::format("{:.0f}", f.roofline->roofline_percent) : "-");
  }
  out += "\n";
  for (const StageFigures& f : report.stages) {
    if (f.spec.kind != StageKind::kCoordinator) continue;
    out += fmt::format(
        "coordinator per decode step: embedding {:.3f} ms, LM head {:.3f} ms, sampling {:.3f} ms "
        "(its GB/s and roofline count the LM head only)\n",
        f.embed_ms, f.lm_head_ms, f.sampling_ms);
    if (!f.batch) {
      out +=
          "coordinator: concurrent sequences share LM head reads in batches the bench cannot "
          "see, so its bytes per token and roofline are not given\n";
    }
  }
  if (report.hops) {
    out += fmt::format(
        "hops: {:.3f} ms per decode step over {} hops = {:.3f} ms per hop (round trip minus "
        "every stage's queue and compute, split evenly: frames carry no per-hop clocks)\n",
        report.hops->total_ms, report.hops->count, report.hops->per_hop_ms);
  }
  for (const StageFigures& f : report.stages) {
    if (f.spec.resident_bytes == 0) continue;
    const double held = static_cast<double>(f.spec.matrix_bytes + f.spec.kv_cache_bytes);
    out += fmt::format(
        "{}: resident {:.1f} MiB = weight matrices {:.1f} MiB + KV cache {:.1f} MiB + {:.1f} MiB "
        "other ({:+.1f}%)\n",
        f.spec.name, f.spec.resident_bytes / 1048576.0, f.spec.matrix_bytes / 1048576.0,
        f.spec.kv_cache_bytes / 1048576.0,
        (static_cast<double>(f.spec.resident_bytes) - held) / 1048576.0,
        held > 0 ? 100.0 * (static_cast<double>(f.spec.resident_bytes) - held) / held : 0.0);
  }
  for (const StageFigures& f : report.stages) {
    if (!f.spec.bandwidth_source.empty() && f.spec.bandwidth_source != "measured here") {
      out += fmt::format("{}: roofline against {}\n", f.spec.name, f.spec.bandwidth_source);
    }
  }
  if (w.concurrency > 1) {
    out +=
        "decode ms/tok is the stage's busy time per decoded token; queue and hop ms are per "
        "decode step of one sequence\n";
  }

  const EndToEnd& e = report.end_to_end;
  out += fmt::format("\ntime to first token: {:.1f} ms", e.ttft_ms);
  if (w.concurrency > 1) out += fmt::format(" (mean; slowest {:.1f} ms)", e.ttft_max_ms);
  out += fmt::format(
      "\nprefill: {:.1f} tokens/s ({:.1f} GFLOP/s in the blocks' matrix products)\n"
      "decode: {:.1f} tokens/s ({} tokens: {} steps x {} sequence{})\n"
      "per-token latency: p50 {:.2f} ms, p95 {:.2f} ms, p99 {:.2f} ms (mean {:.2f} ms)\n",
      e.prefill_tokens_per_second, e.prefill_tokens_per_second * PrefillFlopsPerToken(in) / 1e9,
      e.decode_tokens_per_second, e.decode_tokens, w.generated_tokens - 1, w.concurrency,
      w.concurrency == 1 ? "" : "s", e.latency_p50_ms, e.latency_p95_ms, e.latency_p99_ms,
      e.latency_mean_ms);
  return out;
}

std::string ReportSvg(const BenchReport& report) {
  const ReportInput& in = report.input;
  ChartOptions options;
  options.title = fmt::format(
      "dgpt bench: mean decode step, {} ({} prompt + {} generated tokens, {} sequence{}, {})",
      in.model_dir, in.workload.prompt_tokens, in.workload.generated_tokens,
      in.workload.concurrency, in.workload.concurrency == 1 ? "" : "s",
      in.pipeline ? "pipeline" : "one process");
  ChartBar bar{"decode step (mean)", report.breakdown};
  return StackedBarChartSvg({bar}, options);
}

}  // namespace dgpt::bench
