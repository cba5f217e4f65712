#include "tools/serve/metrics.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

namespace dgpt::serve {

Histogram::Histogram(std::vector<double> upper_bounds) {
  data_.upper_bounds = std::move(upper_bounds);
  data_.bucket_counts.assign(data_.upper_bounds.size() + 1, 0);
}

void Histogram::Observe(double value) {
  // Buckets are "less than or equal": the first bound >= value.
  const size_t bucket =
      std::lower_bound(data_.upper_bounds.begin(), data_.upper_bounds.end(), value) -
      data_.upper_bounds.begin();
  std::lock_guard lock(mutex_);
  ++data_.bucket_counts[bucket];
  ++data_.count;
  data_.sum += value;
}

Histogram::Snapshot Histogram::snapshot() const {
  std::lock_guard lock(mutex_);
  return data_;
}

std::string FormatMetricValue(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
  if (value == std::floor(value) && std::fabs(value) < 1e15) {
    return fmt::format("{}", static_cast<int64_t>(value));
  }
  return fmt::format("{}", value);  // shortest text that reads back as the same double
}

std::string EscapeLabelValue(std::string_view value) {
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

namespace {

std::string FormatLabels(const Labels& labels) {
  if (labels.empty()) return "";
  std::string out = "{";
  for (size_t i = 0; i < labels.size(); ++i) {
    if (i) out += ',';
    out += fmt::format("{}=\"{}\"", labels[i].first, EscapeLabelValue(labels[i].second));
  }
  return out + "}";
}

// Request latency: milliseconds for a short completion up to minutes for a long one on a Pi.
std::vector<double> RequestBuckets() {
  return {0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300};
}
std::vector<double> FirstTokenBuckets() {
  return {0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30};
}
std::vector<double> StepBuckets() {
  return {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5};
}

}  // namespace

void PrometheusText::Family(std::string_view name, std::string_view type, std::string_view help) {
  text_ += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
}

void PrometheusText::Sample(std::string_view name, const Labels& labels, double value) {
  text_ += fmt::format("{}{} {}\n", name, FormatLabels(labels), FormatMetricValue(value));
}

void PrometheusText::HistogramSamples(std::string_view name, const Labels& labels,
                                      const Histogram::Snapshot& histogram) {
  uint64_t cumulative = 0;
  for (size_t i = 0; i < histogram.bucket_counts.size(); ++i) {
    cumulative += histogram.bucket_counts[i];
    Labels with_le = labels;
    with_le.emplace_back("le", i < histogram.upper_bounds.size()
                                   ? FormatMetricValue(histogram.upper_bounds[i])
                                   : "+Inf");
    Sample(fmt::format("{}_bucket", name), with_le, static_cast<double>(cumulative));
  }
  Sample(fmt::format("{}_sum", name), labels, histogram.sum);
  Sample(fmt::format("{}_count", name), labels, static_cast<double>(histogram.count));
}

ServeMetrics::ServeMetrics()
    : request_seconds_(RequestBuckets()),
      first_token_seconds_(FirstTokenBuckets()),
      step_seconds_(StepBuckets()),
      wire_seconds_(StepBuckets()) {}

void ServeMetrics::ObservePipelineStep(
    const std::vector<std::pair<double, double>>& stage_queue_compute, double wire_seconds) {
  {
    std::lock_guard lock(mutex_);
    while (stage_compute_seconds_.size() < stage_queue_compute.size()) {
      stage_queue_seconds_.push_back(std::make_unique<Histogram>(StepBuckets()));
      stage_compute_seconds_.push_back(std::make_unique<Histogram>(StepBuckets()));
    }
    for (size_t i = 0; i < stage_queue_compute.size(); ++i) {
      stage_queue_seconds_[i]->Observe(stage_queue_compute[i].first);
      stage_compute_seconds_[i]->Observe(stage_queue_compute[i].second);
    }
  }
  wire_seconds_.Observe(wire_seconds);
}

void ServeMetrics::CountRequest(std::string_view route, int http_status) {
  std::lock_guard lock(mutex_);
  ++requests_[{std::string(route), http_status}];
}

void ServeMetrics::CountBusyRejection() {
  std::lock_guard lock(mutex_);
  ++busy_rejections_;
}

void ServeMetrics::CountTokens(int64_t prompt_tokens, int64_t generated_tokens) {
  std::lock_guard lock(mutex_);
  prompt_tokens_ += prompt_tokens;
  generated_tokens_ += generated_tokens;
}

std::string ServeMetrics::Render(const Gauges& gauges,
                                 const std::vector<StageStatus>& stages) const {
  PrometheusText out;
  {
    std::lock_guard lock(mutex_);
    out.Family("dgpt_http_requests_total", "counter",
               "HTTP requests answered, by route and status");
    for (const auto& [key, count] : requests_) {
      out.Sample("dgpt_http_requests_total",
                 {{"route", key.first}, {"code", std::to_string(key.second)}},
                 static_cast<double>(count));
    }
    out.Family("dgpt_busy_rejections_total", "counter",
               "Completions refused with 429 because --max-sequences were running");
    out.Sample("dgpt_busy_rejections_total", {}, static_cast<double>(busy_rejections_));
    out.Family("dgpt_prompt_tokens_total", "counter", "Prompt tokens processed");
    out.Sample("dgpt_prompt_tokens_total", {}, static_cast<double>(prompt_tokens_));
    out.Family("dgpt_generated_tokens_total", "counter", "Tokens generated");
    out.Sample("dgpt_generated_tokens_total", {}, static_cast<double>(generated_tokens_));
  }
  out.Family("dgpt_request_duration_seconds", "histogram",
             "Completion request latency, from the request to its last token");
  out.HistogramSamples("dgpt_request_duration_seconds", {}, request_seconds_.snapshot());
  out.Family("dgpt_time_to_first_token_seconds", "histogram",
             "From the request to its first generated token");
  out.HistogramSamples("dgpt_time_to_first_token_seconds", {}, first_token_seconds_.snapshot());
  out.Family("dgpt_decode_step_seconds", "histogram", "Time between consecutive tokens");
  out.HistogramSamples("dgpt_decode_step_seconds", {}, step_seconds_.snapshot());
  {
    std::lock_guard lock(mutex_);
    if (!stage_compute_seconds_.empty()) {
      out.Family("dgpt_stage_compute_seconds", "histogram",
                 "Per pipeline step, each stage's compute time (from the RESULT frame's timings)");
      for (size_t i = 0; i < stage_compute_seconds_.size(); ++i) {
        out.HistogramSamples("dgpt_stage_compute_seconds", {{"stage", std::to_string(i + 1)}},
                             stage_compute_seconds_[i]->snapshot());
      }
      out.Family("dgpt_stage_queue_seconds", "histogram",
                 "Per pipeline step, how long the chunk waited in each stage's queue");
      for (size_t i = 0; i < stage_queue_seconds_.size(); ++i) {
        out.HistogramSamples("dgpt_stage_queue_seconds", {{"stage", std::to_string(i + 1)}},
                             stage_queue_seconds_[i]->snapshot());
      }
      out.Family("dgpt_pipeline_wire_seconds", "histogram",
                 "Per pipeline step, round trip minus every stage's queue and compute: "
                 "serialization and network over all hops");
      out.HistogramSamples("dgpt_pipeline_wire_seconds", {}, wire_seconds_.snapshot());
    }
  }

  out.Family("dgpt_sequences_running", "gauge", "Generations running now (KV slots in use)");
  out.Sample("dgpt_sequences_running", {}, gauges.sequences_running);
  out.Family("dgpt_max_sequences", "gauge", "Generations allowed at once (--max-sequences)");
  out.Sample("dgpt_max_sequences", {}, gauges.max_sequences);
  out.Family("dgpt_requests_in_flight", "gauge", "Completion requests being handled now");
  out.Sample("dgpt_requests_in_flight", {}, gauges.requests_in_flight);
  // Requests beyond --max-sequences are refused, never queued.
  out.Family("dgpt_queue_depth", "gauge", "Completions waiting for a slot (always 0: no queue)");
  out.Sample("dgpt_queue_depth", {}, 0);

  auto stage_labels = [](size_t i, const StageStatus& stage) {
    return Labels{{"stage", std::to_string(i + 1)},
                  {"address", stage.address},
                  {"layers", fmt::format("{}:{}", stage.layer_begin, stage.layer_end)}};
  };
  struct StageValue {
    const char* name;
    const char* type;
    const char* help;
    double (*get)(const StageStatus&);
    bool needs_stats;
  };
  static constexpr StageValue kStageValues[] = {
      {"dgpt_stage_up", "gauge", "1 when the stage answered its last check",
       [](const StageStatus& s) { return s.up ? 1.0 : 0.0; }, false},
      {"dgpt_stage_round_trip_seconds", "gauge", "Last control round trip to the stage",
       [](const StageStatus& s) { return s.last_latency_ms / 1e3; }, false},
      {"dgpt_stage_sequences_in_use", "gauge", "KV slots the stage holds",
       [](const StageStatus& s) { return double(s.sequences_in_use); }, true},
      {"dgpt_stage_max_sequences", "gauge", "KV slots the stage can hold",
       [](const StageStatus& s) { return double(s.max_sequences); }, true},
      {"dgpt_stage_kv_cache_bytes", "gauge", "Bytes of KV cache the stage holds",
       [](const StageStatus& s) { return double(s.kv_cache_bytes); }, true},
      {"dgpt_stage_weight_bytes", "gauge", "Bytes of weight matrices the stage reads per step",
       [](const StageStatus& s) { return double(s.weight_bytes); }, true},
      {"dgpt_stage_resident_bytes", "gauge", "Resident memory of the stage's process",
       [](const StageStatus& s) { return double(s.resident_bytes); }, true},
      {"dgpt_stage_forwards_total", "counter", "Forward passes the stage computed",
       [](const StageStatus& s) { return double(s.forwards); }, true},
      {"dgpt_stage_tokens_total", "counter", "Token positions the stage computed",
       [](const StageStatus& s) { return double(s.tokens); }, true},
      {"dgpt_stage_compute_seconds_total", "counter", "Seconds the stage spent computing",
       [](const StageStatus& s) { return s.compute_seconds; }, true},
  };
  for (const StageValue& value : kStageValues) {
    out.Family(value.name, value.type, value.help);
    for (size_t i = 0; i < stages.size(); ++i) {
      if (value.needs_stats && !stages[i].has_stats) continue;
      out.Sample(value.name, stage_labels(i, stages[i]), value.get(stages[i]));
    }
  }
  return out.text();
}

}  // namespace dgpt::serve
