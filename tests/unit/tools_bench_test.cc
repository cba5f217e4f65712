// dgpt bench's pieces: the SVG chart, the statistics, the weight bytes and the figures computed
// from hand-made traces (so every number is known).
#include <catch2/catch.hpp>
#include <cmath>
#include <string>

#include "tools/bench/report.h"
#include "tools/bench/roofline.h"
#include "tools/bench/stats.h"
#include "tools/bench/svg_chart.h"

using namespace dgpt;
using namespace dgpt::bench;

namespace {

int Count(const std::string& text, const std::string& needle) {
  int count = 0;
  for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) {
    ++count;
  }
  return count;
}

// The width="..." of every segment rect, in order.
std::vector<double> SegmentWidths(const std::string& svg) {
  std::vector<double> widths;
  const std::string rect = "<rect class=\"segment\"", width = "width=\"";
  for (size_t at = svg.find(rect); at != std::string::npos; at = svg.find(rect, at + 1)) {
    widths.push_back(std::stod(svg.substr(svg.find(width, at) + width.size())));
  }
  return widths;
}

ModelConfig TinyConfig() {
  ModelConfig config;
  config.n_layer = 2;
  config.n_head = 2;
  config.n_embd = 64;
  config.n_positions = 64;
  config.vocab_size = 100;
  return config;
}

}  // namespace

TEST_CASE("bench: svg chart: one rect per segment, widths in proportion", "[bench]") {
  ChartBar bar{"decode step", {{"a", 1.0, ""}, {"b", 3.0, "#123456"}, {"c", 0.0, ""}}};
  const std::string svg = StackedBarChartSvg({bar}, {.title = "t", .unit = "ms", .width = 960});
  CHECK(svg.rfind("<?xml", 0) == 0);
  CHECK(svg.find("<svg xmlns=\"http://www.w3.org/2000/svg\"") != std::string::npos);
  CHECK(Count(svg, "class=\"segment\"") == 3);
  CHECK(Count(svg, "class=\"swatch\"") == 3);
  CHECK(svg.find("fill=\"#123456\"") != std::string::npos);  // a given colour is kept
  const std::vector<double> widths = SegmentWidths(svg);
  REQUIRE(widths.size() == 3);
  CHECK(widths[1] == Approx(3 * widths[0]).epsilon(0.01));
  CHECK(widths[2] == 0);
  CHECK(svg.find("b: 3.00 ms (75%)") != std::string::npos);  // legend with value and share
  CHECK(svg.find("4.00 ms") != std::string::npos);           // the bar's total
  CHECK(svg.find("nan") == std::string::npos);
}

TEST_CASE("bench: svg chart: labels are escaped, bad values drawn as zero", "[bench]") {
  ChartBar bar{"<bar & \"x\">", {{"a<b", -1.0, ""}, {"c&d", std::nan(""), ""}}};
  const std::string svg = StackedBarChartSvg({bar}, {.title = "it's", .unit = "ms", .width = 600});
  CHECK(svg.find("a&lt;b") != std::string::npos);
  CHECK(svg.find("c&amp;d") != std::string::npos);
  CHECK(svg.find("&lt;bar &amp; &quot;x&quot;&gt;") != std::string::npos);
  CHECK(svg.find("it&apos;s") != std::string::npos);
  CHECK(svg.find("a<b") == std::string::npos);
  CHECK(svg.find("nan") == std::string::npos);
  for (double width : SegmentWidths(svg)) CHECK(width == 0);
}

TEST_CASE("bench: svg chart: several bars share colours by label; no bars is valid", "[bench]") {
  ChartBar one{"one", {{"x", 1, ""}, {"y", 1, ""}}};
  ChartBar two{"two", {{"y", 2, ""}, {"x", 2, ""}}};
  const std::string svg = StackedBarChartSvg({one, two}, {.title = "", .unit = "ms", .width = 800});
  CHECK(Count(svg, "class=\"segment\"") == 4);
  CHECK(Count(svg, "class=\"swatch\"") == 2);
  const std::string empty = StackedBarChartSvg({}, {.title = "", .unit = "ms", .width = 800});
  CHECK(Count(empty, "class=\"segment\"") == 0);
  CHECK(empty.find("</svg>") != std::string::npos);
}

TEST_CASE("bench: percentiles interpolate; union does not count overlaps twice", "[bench]") {
  CHECK(Percentile({}, 50) == 0);
  CHECK(Percentile({5}, 99) == 5);
  CHECK(Percentile({4, 1, 3, 2}, 50) == Approx(2.5));
  CHECK(Percentile({1, 2, 3, 4, 5}, 95) == Approx(4.8));
  CHECK(Percentile({1, 2, 3, 4, 5}, 0) == 1);
  CHECK(Percentile({1, 2, 3, 4, 5}, 100) == 5);
  CHECK(Mean({1, 2, 6}) == Approx(3));
  CHECK(UnionSeconds({}) == 0);
  CHECK(UnionSeconds({{0, 1}, {2, 3}}) == Approx(2));
  CHECK(UnionSeconds({{0, 2}, {1, 3}, {1.5, 1.7}}) == Approx(3));
  CHECK(UnionSeconds({{5, 6}, {0, 1}, {0.5, 5.5}}) == Approx(6));
}

TEST_CASE("bench: weight bytes per decode step", "[bench]") {
  ModelConfig gpt2 = TinyConfig();
  gpt2.n_layer = 12;
  gpt2.n_embd = 768;
  gpt2.vocab_size = 50257;
  const int64_t C = 768;
  const int64_t per_block_f32 = 12 * C * C * 4 + 13 * C * 4;
  CHECK(DecodeWeightBytes(gpt2, 12, WeightFormat::kF32, false) == 12 * per_block_f32);
  CHECK(DecodeWeightBytes(gpt2, 4, WeightFormat::kF16, false) == 4 * (12 * C * C * 2 + 13 * C * 4));
  // q8_0: 34 bytes per 32 weights.
  CHECK(DecodeWeightBytes(gpt2, 1, WeightFormat::kQ8_0, false) ==
        12 * C * C / 32 * 34 + 13 * C * 4);
  CHECK(DecodeWeightBytes(gpt2, 0, WeightFormat::kF32, true) == 50257 * C * 4 + 4 * C * 4);
  const Roofline r = ComputeRoofline(2e9, 0.1, 40);
  CHECK(r.achieved_gbs == Approx(20));
  CHECK(r.roofline_percent == Approx(50));
  CHECK(ComputeRoofline(2e9, 0.1, 0).roofline_percent == 0);  // bandwidth unknown
  CHECK(ComputeRoofline(2e9, 0, 40).achieved_gbs == 0);
}

TEST_CASE("bench: figures of a single-process run from its trace", "[bench]") {
  ReportInput in;
  in.config = TinyConfig();
  in.workload = {.prompt_tokens = 4, .generated_tokens = 3, .concurrency = 1, .seed = 1};
  in.bandwidth.source = "measured";
  StageSpec coordinator;
  coordinator.kind = StageKind::kCoordinator;
  coordinator.name = "coordinator";
  coordinator.bandwidth_gbs = 10;
  StageSpec local = coordinator;
  local.kind = StageKind::kLocal;
  local.name = "local";
  local.layers = {0, 2};
  in.stages = {coordinator, local};
  // Times in ms: prompt [2, 10], then two decode steps of embed 0.5, blocks 6, head 3,
  // sampling 0.5.
  SequenceTrace t;
  t.start = 0;
  t.begun = 1e-3;
  t.forwards = {{2e-3, 10e-3}, {14e-3, 20e-3}, {24e-3, 30e-3}};
  t.logits = {12e-3, 23e-3, 33e-3};
  t.token_in = {13e-3, 23.5e-3, 33.5e-3};
  t.token_out = {13.5e-3, 23.5e-3, 33.5e-3};
  in.traces = {t};
  in.decode_start = 13.5e-3;

  auto report = Analyze(in);
  REQUIRE(report.ok());
  const StageFigures& c = report->stages[0];
  const StageFigures& l = report->stages[1];
  CHECK(c.prefill_ms_per_token == Approx((1.0 + 3.0) / 4));  // embedding + head + sampling
  CHECK(c.embed_ms == Approx(0.5));
  CHECK(c.lm_head_ms == Approx(3));
  CHECK(c.sampling_ms == Approx(0.5));
  CHECK(c.decode_ms_per_token == Approx(4));
  CHECK(c.weight_bytes_per_step == DecodeWeightBytes(in.config, 0, WeightFormat::kF32, true));
  CHECK(c.roofline->achieved_gbs == Approx(c.weight_bytes_per_step / 3e-3 / 1e9));
  CHECK(l.prefill_ms_per_token == Approx(2));
  CHECK(l.decode_ms_per_token == Approx(6));
  CHECK(l.decode_ms_per_step == Approx(6));
  CHECK(*l.batch == 1);
  CHECK(l.roofline->roofline_percent == Approx(100 * l.weight_bytes_per_step / 6e-3 / 1e9 / 10));
  CHECK_FALSE(report->hops.has_value());
  const EndToEnd& e = report->end_to_end;
  CHECK(e.ttft_ms == Approx(13));
  CHECK(e.latency_mean_ms == Approx(10));
  CHECK(e.latency_p50_ms == Approx(10));
  CHECK(e.decode_tokens_per_second == Approx(2 / 20e-3));
  CHECK(e.decode_tokens == 2);
  double total = 0;
  for (const ChartSegment& part : report->breakdown) total += part.value;
  CHECK(total == Approx(10));
  CHECK(report->breakdown.back().value == Approx(0).margin(1e-9));  // nothing unaccounted

  const nlohmann::json json = ReportJson(*report);
  CHECK(json["mode"] == "local");
  CHECK(json["stages"].size() == 2);
  CHECK(json["end_to_end"]["per_token_latency_ms"]["p99"].get<double>() == Approx(10));
  CHECK(ReportText(*report).find("roofline %") != std::string::npos);
}

TEST_CASE("bench: figures of a pipeline run: hops, queue, batch", "[bench]") {
  ReportInput in;
  in.config = TinyConfig();
  in.pipeline = true;
  in.workload = {.prompt_tokens = 2, .generated_tokens = 2, .concurrency = 2, .seed = 1};
  StageSpec coordinator;
  coordinator.kind = StageKind::kCoordinator;
  coordinator.name = "coordinator";
  StageSpec worker;
  worker.kind = StageKind::kWorker;
  worker.name = "stage 1";
  worker.layers = {0, 2};
  worker.bandwidth_gbs = 10;
  // Both sequences' decode steps computed as one batch of 4 ms.
  worker.prefill = {.compute_ns = 8'000'000, .tokens = 4};
  worker.decode = {.compute_ns = 4'000'000, .tokens = 2};
  in.stages = {coordinator, worker};
  for (int s = 0; s < 2; ++s) {
    SequenceTrace t;
    t.forwards = {{1e-3, 5e-3}, {10e-3, 20e-3}};
    t.logits = {6e-3, 21e-3};
    t.token_in = {7e-3, 22e-3};
    t.token_out = {8e-3, 22e-3};
    net::StepTimings prefill{
        .rows = 2, .total_seconds = 4e-3, .stages = {{0, 3'000'000}}, .local_seconds = 0};
    // 10 ms round trip: 1 ms queue + 4 ms compute, so 5 ms on the two hops.
    net::StepTimings decode{
        .rows = 1, .total_seconds = 10e-3, .stages = {{1'000'000, 4'000'000}}, .local_seconds = 0};
    t.steps = {prefill, decode};
    in.traces.push_back(t);
  }
  in.decode_start = 8e-3;

  auto report = Analyze(in);
  REQUIRE(report.ok());
  REQUIRE(report->hops.has_value());
  CHECK(report->hops->count == 2);
  CHECK(report->hops->total_ms == Approx(5));
  CHECK(report->hops->per_hop_ms == Approx(2.5));
  const StageFigures& w = report->stages[1];
  CHECK(w.prefill_ms_per_token == Approx(2));
  CHECK(w.decode_ms_per_step == Approx(4));
  CHECK(w.decode_ms_per_token == Approx(2));
  CHECK(*w.batch == Approx(2));
  CHECK(*w.queue_ms == Approx(1));
  CHECK(*w.hop_ms == Approx(2.5));
  CHECK(*w.weight_bytes_per_token == Approx(w.weight_bytes_per_step / 2.0));
  // One 4 ms batch reads the stage's weights once.
  CHECK(w.roofline->achieved_gbs == Approx(w.weight_bytes_per_step / 4e-3 / 1e9));
  const StageFigures& c = report->stages[0];
  CHECK_FALSE(c.batch.has_value());  // a shared LM head's batches are not visible
  CHECK_FALSE(c.roofline.has_value());

  // Traces that do not match the workload are an error, not a crash.
  in.traces[1].steps.pop_back();
  CHECK_FALSE(Analyze(in).ok());
}
