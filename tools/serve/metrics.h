// What `dgpt serve` counts and how /metrics shows it: the Prometheus text exposition format
// (version 0.0.4) — counters, gauges and histograms with cumulative `le` buckets.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "tools/serve/stage_status.h"

namespace dgpt::serve {

using Labels = std::vector<std::pair<std::string, std::string>>;

// Observations counted into buckets by upper bound. Thread-safe.
class Histogram {
 public:
  // REQUIRES: upper_bounds ascending; +Inf is implied.
  explicit Histogram(std::vector<double> upper_bounds);

  void Observe(double value);

  struct Snapshot {
    std::vector<double> upper_bounds;
    std::vector<uint64_t> bucket_counts;  // per bucket (not cumulative); last one is +Inf
    uint64_t count = 0;
    double sum = 0;
  };
  Snapshot snapshot() const;

 private:
  mutable std::mutex mutex_;
  Snapshot data_;
};

// Builds the text of one scrape.
class PrometheusText {
 public:
  // "# HELP" and "# TYPE" lines; once per metric name, before its samples.
  void Family(std::string_view name, std::string_view type, std::string_view help);
  // name{labels} value
  void Sample(std::string_view name, const Labels& labels, double value);
  // name_bucket{labels,le="..."} (cumulative, ending with +Inf), name_sum, name_count.
  void HistogramSamples(std::string_view name, const Labels& labels,
                        const Histogram::Snapshot& histogram);

  const std::string& text() const { return text_; }

 private:
  std::string text_;
};

// A sample value: integers without a fraction, "+Inf", "-Inf", "NaN".
std::string FormatMetricValue(double value);
// Escapes \, " and newlines in a label value.
std::string EscapeLabelValue(std::string_view value);

// What the server itself counts (the stages report their own counters, see StageStatus).
class ServeMetrics {
 public:
  ServeMetrics();

  void CountRequest(std::string_view route, int http_status);
  void CountBusyRejection();
  void CountTokens(int64_t prompt_tokens, int64_t generated_tokens);
  void ObserveRequestSeconds(double seconds) { request_seconds_.Observe(seconds); }
  void ObserveFirstTokenSeconds(double seconds) { first_token_seconds_.Observe(seconds); }
  void ObserveStepSeconds(double seconds) { step_seconds_.Observe(seconds); }
  // One pipeline step: each stage's queue wait and compute (in chain order), and the rest of
  // the step's round trip, which is serialization and the network.
  void ObservePipelineStep(const std::vector<std::pair<double, double>>& stage_queue_compute,
                           double wire_seconds);

  // Gauges sampled at scrape time.
  struct Gauges {
    int sequences_running = 0;
    int max_sequences = 0;
    int requests_in_flight = 0;
  };
  std::string Render(const Gauges& gauges, const std::vector<StageStatus>& stages) const;

 private:
  mutable std::mutex mutex_;
  std::map<std::pair<std::string, int>, uint64_t> requests_;  // (route, status) -> count
  uint64_t busy_rejections_ = 0;
  uint64_t prompt_tokens_ = 0;
  uint64_t generated_tokens_ = 0;
  Histogram request_seconds_;
  Histogram first_token_seconds_;
  Histogram step_seconds_;
  Histogram wire_seconds_;
  std::vector<std::unique_ptr<Histogram>> stage_queue_seconds_;    // guarded by mutex_
  std::vector<std::unique_ptr<Histogram>> stage_compute_seconds_;  // guarded by mutex_
};

}  // namespace dgpt::serve
