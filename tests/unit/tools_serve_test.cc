// dgpt serve's wire format: request validation, response shapes, SSE chunks, Prometheus text.
#include <catch2/catch.hpp>
#include <cmath>
#include <string>

#include "tools/serve/metrics.h"
#include "tools/serve/openai_api.h"

using dgpt::serve::ApiError;
using dgpt::serve::ApiResult;
using dgpt::serve::CompletionRequest;
using nlohmann::json;

namespace {

const dgpt::serve::ModelInfo kModel{"tiny", 64, 300};

ApiResult<CompletionRequest> Parse(const std::string& body) {
  return dgpt::serve::ParseCompletionRequest(body, kModel);
}

// The request fails with `status`, naming `param` (empty: null).
void RequireError(const std::string& body, int status, const std::string& param,
                  const std::string& needle = "") {
  INFO(body);
  auto result = Parse(body);
  REQUIRE_FALSE(result.ok());
  CHECK(result.error().http_status == status);
  CHECK(result.error().param == param);
  if (!needle.empty()) CHECK_THAT(result.error().message, Catch::Contains(needle));
}

}  // namespace

TEST_CASE("serve: completion request: OpenAI defaults", "[serve]") {
  auto result = Parse(R"({"model": "tiny", "prompt": "Hello"})");
  REQUIRE(result.ok());
  const CompletionRequest& r = result.value();
  REQUIRE(r.prompts.size() == 1);
  CHECK(*r.prompts[0].text == "Hello");
  CHECK(r.max_tokens == 16);
  CHECK(r.sampling.temperature == 1.0f);
  CHECK(r.sampling.top_p == 1.0f);
  CHECK(r.sampling.top_k == 0);
  CHECK(r.sampling.repetition_penalty == 1.0f);
  CHECK_FALSE(r.seed.has_value());
  CHECK(r.n == 1);
  CHECK_FALSE(r.stream);
  CHECK(r.stop.empty());
}

TEST_CASE("serve: completion request: every option", "[serve]") {
  auto result = Parse(R"({"model": "tiny", "prompt": ["a", "b"], "max_tokens": 5,
      "temperature": 0, "top_p": 0.5, "top_k": 7, "repetition_penalty": 1.3, "seed": 42,
      "stop": ["x", "", "y"], "n": 3, "stream": true, "stream_options": {"include_usage": true},
      "ignore_eos": true, "logprobs": null, "echo": false, "best_of": 3, "user": "me",
      "presence_penalty": 0, "frequency_penalty": 0.0, "logit_bias": {}, "suffix": null,
      "some_future_field": [1, 2]})");
  REQUIRE(result.ok());
  const CompletionRequest& r = result.value();
  CHECK(r.prompts.size() == 2);
  CHECK(r.max_tokens == 5);
  CHECK(r.sampling.temperature == 0.0f);
  CHECK(r.sampling.top_p == 0.5f);
  CHECK(r.sampling.top_k == 7);
  CHECK(r.sampling.repetition_penalty == Approx(1.3f));
  CHECK(*r.seed == 42);
  CHECK(r.stop == std::vector<std::string>{"x", "y"});  // empty stop strings are dropped
  CHECK(r.n == 3);
  CHECK(r.stream);
  CHECK(r.include_usage);
  CHECK(r.ignore_eos);
}

TEST_CASE("serve: completion request: prompts as token ids", "[serve]") {
  auto flat = Parse(R"({"model": "tiny", "prompt": [1, 2, 3]})");
  REQUIRE(flat.ok());
  REQUIRE(flat.value().prompts.size() == 1);
  CHECK_FALSE(flat.value().prompts[0].text.has_value());
  CHECK(flat.value().prompts[0].ids == std::vector<dgpt::TokenId>{1, 2, 3});

  auto nested = Parse(R"({"model": "tiny", "prompt": [[1, 2], [3], "text"]})");
  REQUIRE(nested.ok());
  REQUIRE(nested.value().prompts.size() == 3);
  CHECK(nested.value().prompts[1].ids == std::vector<dgpt::TokenId>{3});
  CHECK(*nested.value().prompts[2].text == "text");

  auto missing = Parse(R"({"model": "tiny"})");  // <|endoftext|>, as OpenAI
  REQUIRE(missing.ok());
  CHECK(*missing.value().prompts[0].text == "");
}

TEST_CASE("serve: completion request: malformed bodies are 400", "[serve]") {
  RequireError("{not json", 400, "", "not valid JSON");
  RequireError("", 400, "", "not valid JSON");
  RequireError("[1, 2]", 400, "", "JSON object");
  RequireError(R"({"prompt": "x"})", 400, "model", "model");
  RequireError(R"({"model": 7, "prompt": "x"})", 400, "model", "must be a string");
}

TEST_CASE("serve: completion request: unknown model is 404 model_not_found", "[serve]") {
  auto result = Parse(R"({"model": "gpt-4", "prompt": "x"})");
  REQUIRE_FALSE(result.ok());
  CHECK(result.error().http_status == 404);
  CHECK(result.error().code == "model_not_found");
  CHECK_THAT(result.error().message, Catch::Contains("gpt-4") && Catch::Contains("tiny"));
}

TEST_CASE("serve: completion request: wrong types and ranges are 400 naming the field", "[serve]") {
  RequireError(R"({"model": "tiny", "prompt": 5})", 400, "prompt");
  RequireError(R"({"model": "tiny", "prompt": []})", 400, "prompt", "empty");
  RequireError(R"({"model": "tiny", "prompt": [1, -2]})", 400, "prompt");
  RequireError(R"({"model": "tiny", "prompt": [[1], [true]]})", 400, "prompt");
  RequireError(R"({"model": "tiny", "prompt": ["a", 1.5]})", 400, "prompt");
  RequireError(R"({"model": "tiny", "max_tokens": "10"})", 400, "max_tokens", "integer");
  RequireError(R"({"model": "tiny", "max_tokens": 1.5})", 400, "max_tokens", "integer");
  RequireError(R"({"model": "tiny", "max_tokens": -1})", 400, "max_tokens", "between 0 and 64");
  RequireError(R"({"model": "tiny", "max_tokens": 65})", 400, "max_tokens", "between 0 and 64");
  RequireError(R"({"model": "tiny", "temperature": -0.5})", 400, "temperature");
  RequireError(R"({"model": "tiny", "temperature": "hot"})", 400, "temperature", "number");
  RequireError(R"({"model": "tiny", "top_p": 0})", 400, "top_p");
  RequireError(R"({"model": "tiny", "top_p": 1.5})", 400, "top_p");
  RequireError(R"({"model": "tiny", "top_k": -1})", 400, "top_k");
  RequireError(R"({"model": "tiny", "repetition_penalty": 0})", 400, "repetition_penalty");
  RequireError(R"({"model": "tiny", "seed": -3})", 400, "seed");
  RequireError(R"({"model": "tiny", "seed": "7"})", 400, "seed");
  RequireError(R"({"model": "tiny", "n": 0})", 400, "n");
  RequireError(R"({"model": "tiny", "n": 9})", 400, "n");
  RequireError(R"({"model": "tiny", "stream": "yes"})", 400, "stream", "boolean");
  RequireError(R"({"model": "tiny", "stop": 3})", 400, "stop");
  RequireError(R"({"model": "tiny", "stop": ["a", "b", "c", "d", "e"]})", 400, "stop", "at most 4");
}

TEST_CASE("serve: completion request: options this server cannot honour are 400", "[serve]") {
  RequireError(R"({"model": "tiny", "logprobs": 2})", 400, "logprobs", "not supported");
  RequireError(R"({"model": "tiny", "echo": true})", 400, "echo", "not supported");
  RequireError(R"({"model": "tiny", "best_of": 2})", 400, "best_of", "not supported");
  RequireError(R"({"model": "tiny", "presence_penalty": 0.5})", 400, "presence_penalty");
  RequireError(R"({"model": "tiny", "frequency_penalty": 1})", 400, "frequency_penalty");
  RequireError(R"({"model": "tiny", "logit_bias": {"50256": -100}})", 400, "logit_bias");
  RequireError(R"({"model": "tiny", "suffix": "end"})", 400, "suffix");
  CHECK(Parse(R"({"model": "tiny", "n": 2, "best_of": 2})").ok());
}

TEST_CASE("serve: generate request: dgpt generate's defaults, one prompt, no streaming",
          "[serve]") {
  auto result = dgpt::serve::ParseGenerateRequest(R"({"prompt": "Hi"})", kModel);
  REQUIRE(result.ok());
  CHECK(result.value().max_tokens == 64);
  CHECK(result.value().sampling.temperature == 0.8f);
  CHECK(result.value().sampling.top_k == 40);
  CHECK(result.value().sampling.top_p == 0.95f);
  CHECK_FALSE(dgpt::serve::ParseGenerateRequest(R"({"prompt": ["a", "b"]})", kModel).ok());
  CHECK_FALSE(dgpt::serve::ParseGenerateRequest(R"({"stream": true})", kModel).ok());
  auto wrong_model = dgpt::serve::ParseGenerateRequest(R"({"model": "x"})", kModel);
  REQUIRE_FALSE(wrong_model.ok());
  CHECK(wrong_model.error().http_status == 404);
}

TEST_CASE("serve: prompt length against the context", "[serve]") {
  CHECK_FALSE(dgpt::serve::CheckPromptFits(60, 5, 64).has_value());  // 60 + 5 - 1 = 64
  CHECK_FALSE(dgpt::serve::CheckPromptFits(64, 0, 64).has_value());
  CHECK_FALSE(dgpt::serve::CheckPromptFits(64, 1, 64).has_value());
  auto error = dgpt::serve::CheckPromptFits(61, 5, 64);
  REQUIRE(error.has_value());
  CHECK(error->http_status == 400);
  CHECK(error->code == "context_length_exceeded");
  CHECK(error->param == "prompt");
  CHECK_THAT(error->message, Catch::Contains("64") && Catch::Contains("61"));

  CHECK_FALSE(dgpt::serve::CheckTokenIds({0, 299}, 300).has_value());
  auto outside = dgpt::serve::CheckTokenIds({0, 300}, 300);
  REQUIRE(outside.has_value());
  CHECK_THAT(outside->message, Catch::Contains("300"));
}

TEST_CASE("serve: error JSON has OpenAI's shape", "[serve]") {
  ApiError error = dgpt::serve::InvalidRequest("bad things", "max_tokens");
  const json body = dgpt::serve::ErrorJson(error);
  CHECK(body["error"]["message"] == "bad things");
  CHECK(body["error"]["type"] == "invalid_request_error");
  CHECK(body["error"]["param"] == "max_tokens");
  CHECK(body["error"]["code"].is_null());
  CHECK(dgpt::serve::ErrorJson(dgpt::serve::InvalidRequest("x"))["error"]["param"].is_null());
}

TEST_CASE("serve: completion response and chunk shapes", "[serve]") {
  const dgpt::serve::ResponseHeader header{"cmpl-abc", 1700000000, "tiny"};
  const json response =
      dgpt::serve::CompletionResponse(header, {{0, "hello", "length"}, {1, "bye", "stop"}}, {5, 7});
  CHECK(response["id"] == "cmpl-abc");
  CHECK(response["object"] == "text_completion");
  CHECK(response["created"] == 1700000000);
  CHECK(response["model"] == "tiny");
  REQUIRE(response["choices"].size() == 2);
  CHECK(response["choices"][0] ==
        json{{"text", "hello"}, {"index", 0}, {"logprobs", nullptr}, {"finish_reason", "length"}});
  CHECK(response["choices"][1]["finish_reason"] == "stop");
  CHECK(response["usage"] ==
        json{{"prompt_tokens", 5}, {"completion_tokens", 7}, {"total_tokens", 12}});

  const json chunk = dgpt::serve::CompletionChunk(header, 2, "piece", "");
  REQUIRE(chunk["choices"].is_array());
  REQUIRE(chunk["choices"].size() == 1);
  CHECK(chunk["choices"][0]["text"] == "piece");
  CHECK(chunk["choices"][0]["index"] == 2);
  CHECK(chunk["choices"][0]["finish_reason"].is_null());
  CHECK(chunk["object"] == "text_completion");
  CHECK(dgpt::serve::CompletionChunk(header, 0, "", "stop")["choices"][0]["finish_reason"] ==
        "stop");

  const json usage = dgpt::serve::UsageChunk(header, {3, 4});
  CHECK(usage["choices"].empty());
  CHECK(usage["usage"]["total_tokens"] == 7);

  const json models = dgpt::serve::ModelList("tiny", 5);
  CHECK(models["object"] == "list");
  REQUIRE(models["data"].is_array());
  REQUIRE(models["data"].size() == 1);
  CHECK(models["data"][0]["id"] == "tiny");
  CHECK(models["data"][0]["object"] == "model");
}

TEST_CASE("serve: completion ids", "[serve]") {
  const std::string a = dgpt::serve::NewCompletionId(), b = dgpt::serve::NewCompletionId();
  CHECK(a.rfind("cmpl-", 0) == 0);
  CHECK(a.size() == 29);
  CHECK(a != b);
}

TEST_CASE("serve: SSE events", "[serve]") {
  CHECK(dgpt::serve::SseEvent(json{{"a", 1}}) == "data: {\"a\":1}\n\n");
  CHECK(dgpt::serve::kSseDone == "data: [DONE]\n\n");
  // A completion cut off mid-character must still give valid JSON.
  const std::string event = dgpt::serve::SseEvent(json{{"text", std::string("ok\xe2\x82")}});
  CHECK(event == "data: {\"text\":\"ok\xef\xbf\xbd\"}\n\n");
}

TEST_CASE("serve: Prometheus values and labels", "[serve]") {
  CHECK(dgpt::serve::FormatMetricValue(3) == "3");
  CHECK(dgpt::serve::FormatMetricValue(0.25) == "0.25");
  CHECK(dgpt::serve::FormatMetricValue(-2) == "-2");
  CHECK(dgpt::serve::FormatMetricValue(INFINITY) == "+Inf");
  CHECK(dgpt::serve::FormatMetricValue(-INFINITY) == "-Inf");
  CHECK(dgpt::serve::FormatMetricValue(NAN) == "NaN");
  CHECK(dgpt::serve::EscapeLabelValue("a\"b\\c\nd") == "a\\\"b\\\\c\\nd");

  dgpt::serve::PrometheusText text;
  text.Family("x_total", "counter", "Things");
  text.Sample("x_total", {{"code", "200"}, {"route", "/a"}}, 4);
  text.Sample("x_total", {}, 1.5);
  CHECK(text.text() ==
        "# HELP x_total Things\n# TYPE x_total counter\n"
        "x_total{code=\"200\",route=\"/a\"} 4\nx_total 1.5\n");
}

TEST_CASE("serve: Prometheus histogram buckets are cumulative and end with +Inf", "[serve]") {
  dgpt::serve::Histogram histogram({0.1, 1});
  for (double v : {0.05, 0.1, 0.5, 2.0, 3.0}) histogram.Observe(v);
  const auto snapshot = histogram.snapshot();
  CHECK(snapshot.count == 5);
  CHECK(snapshot.sum == Approx(5.65));
  CHECK(snapshot.bucket_counts == std::vector<uint64_t>{2, 1, 2});  // le is inclusive

  dgpt::serve::PrometheusText text;
  text.HistogramSamples("lat_seconds", {{"route", "r"}}, snapshot);
  CHECK(text.text() ==
        "lat_seconds_bucket{route=\"r\",le=\"0.1\"} 2\n"
        "lat_seconds_bucket{route=\"r\",le=\"1\"} 3\n"
        "lat_seconds_bucket{route=\"r\",le=\"+Inf\"} 5\n"
        "lat_seconds_sum{route=\"r\"} 5.65\n"
        "lat_seconds_count{route=\"r\"} 5\n");
}

TEST_CASE("serve: server metrics: requests, tokens and every stage", "[serve]") {
  dgpt::serve::ServeMetrics metrics;
  metrics.CountRequest("/v1/completions", 200);
  metrics.CountRequest("/v1/completions", 200);
  metrics.CountRequest("/v1/completions", 429);
  metrics.CountBusyRejection();
  metrics.CountTokens(10, 20);
  metrics.ObserveRequestSeconds(0.3);
  metrics.ObserveFirstTokenSeconds(0.02);
  metrics.ObserveStepSeconds(0.004);
  dgpt::serve::StageStatus up;
  up.address = "127.0.0.1:7001";
  up.layer_end = 2;
  up.up = true;
  up.last_latency_ms = 1.5;
  up.has_stats = true;
  up.sequences_in_use = 1;
  up.forwards = 9;
  up.compute_seconds = 0.5;
  dgpt::serve::StageStatus down;
  down.address = "127.0.0.1:7002";
  down.layer_begin = 2;
  down.layer_end = 4;
  const std::string text = metrics.Render({2, 16, 3}, {up, down});
  INFO(text);
  CHECK_THAT(text, Catch::Contains(
                       "dgpt_http_requests_total{route=\"/v1/completions\",code=\"200\"} 2\n"));
  CHECK_THAT(text, Catch::Contains(
                       "dgpt_http_requests_total{route=\"/v1/completions\",code=\"429\"} 1\n"));
  CHECK_THAT(text, Catch::Contains("dgpt_busy_rejections_total 1\n"));
  CHECK_THAT(text, Catch::Contains("dgpt_prompt_tokens_total 10\n"));
  CHECK_THAT(text, Catch::Contains("dgpt_generated_tokens_total 20\n"));
  CHECK_THAT(text, Catch::Contains("dgpt_request_duration_seconds_bucket{le=\"0.5\"} 1\n"));
  CHECK_THAT(text, Catch::Contains("dgpt_time_to_first_token_seconds_count 1\n"));
  CHECK_THAT(text, Catch::Contains("dgpt_decode_step_seconds_bucket{le=\"+Inf\"} 1\n"));
  CHECK_THAT(text, Catch::Contains("dgpt_sequences_running 2\n"));
  CHECK_THAT(text, Catch::Contains("dgpt_max_sequences 16\n"));
  CHECK_THAT(text, Catch::Contains(
                       "dgpt_stage_up{stage=\"1\",address=\"127.0.0.1:7001\",layers=\"0:2\"} 1\n"));
  CHECK_THAT(text, Catch::Contains(
                       "dgpt_stage_up{stage=\"2\",address=\"127.0.0.1:7002\",layers=\"2:4\"} 0\n"));
  CHECK_THAT(text, Catch::Contains("dgpt_stage_round_trip_seconds{stage=\"1\",address=\"127.0.0.1:"
                                   "7001\",layers=\"0:2\"} 0.0015\n"));
  CHECK_THAT(text, Catch::Contains("dgpt_stage_sequences_in_use{stage=\"1\",address=\"127.0.0.1:"
                                   "7001\",layers=\"0:2\"} 1\n"));
  CHECK_THAT(text, Catch::Contains("dgpt_stage_compute_seconds_total{stage=\"1\",address=\"127.0."
                                   "0.1:7001\",layers=\"0:2\"} 0.5\n"));
  // A stage that could not be asked has no counters rather than zeros.
  CHECK_THAT(text, !Catch::Contains("dgpt_stage_sequences_in_use{stage=\"2\""));
  // Every sample line belongs to a family announced before it.
  std::string last_family;
  size_t start = 0;
  while (start < text.size()) {
    const size_t end = text.find('\n', start);
    const std::string line = text.substr(start, end - start);
    start = end + 1;
    if (line.rfind("# TYPE ", 0) == 0) {
      last_family = line.substr(7, line.find(' ', 7) - 7);
    } else if (line[0] != '#') {
      CHECK(line.rfind(last_family, 0) == 0);
    }
  }
}
