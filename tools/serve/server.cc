#include "tools/serve/server.h"

#include <fmt/format.h>
#include <httplib.h>

#include <atomic>
#include <chrono>
#include <ctime>
#include <random>

#include "base/log.h"
#include "tools/serve/metrics.h"
#include "tools/serve/openai_api.h"
#include "tools/text_stream.h"
#include "tools/web/index_html.h"

namespace dgpt::serve {
namespace {

using Clock = std::chrono::steady_clock;
using nlohmann::json;

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

int64_t UnixTime() {
  return static_cast<int64_t>(std::time(nullptr));
}

constexpr const char* kJson = "application/json";

void SendJson(httplib::Response& res, int status, const json& body) {
  res.status = status;
  res.set_content(DumpJson(body), kJson);
}

void SendError(httplib::Response& res, const ApiError& error) {
  SendJson(res, error.http_status, ErrorJson(error));
}

ApiError ServerError(int http_status, std::string message, std::string code = "") {
  ApiError error;
  error.http_status = http_status;
  error.message = std::move(message);
  error.type = "server_error";
  error.code = std::move(code);
  return error;
}

// The label /metrics counts a request under: known routes, everything else "other".
std::string_view RouteLabel(const std::string& path) {
  for (std::string_view route :
       {"/v1/completions", "/v1/models", "/generate", "/health", "/metrics", "/"}) {
    if (path == route) return route;
  }
  if (path.starts_with("/v1/models/")) return "/v1/models";
  return "other";
}

// Counts a request from its handler's start to its last byte (streams end after the handler).
class InFlight {
 public:
  explicit InFlight(std::atomic<int>& count) : count_(count) { ++count_; }
  ~InFlight() { --count_; }
  InFlight(const InFlight&) = delete;
  InFlight& operator=(const InFlight&) = delete;

 private:
  std::atomic<int>& count_;
};

}  // namespace

class Server::Impl {
 public:
  Impl(CompletionEngine& engine, const ServerOptions& options)
      : engine_(engine), options_(options) {
    model_.name = engine.model_name();
    model_.context_length = engine.config().n_positions;
    model_.vocab_size = engine.config().vocab_size;
  }

  Status Bind();
  Status Serve();
  void Stop() { http_.stop(); }
  int port() const { return port_; }

 private:
  // One completion request, shared by the handler and (when streaming) the content provider
  // that runs after the handler returned.
  struct Job {
    CompletionRequest request;
    std::vector<std::vector<TokenId>> prompts;  // tokenized; never empty
    uint64_t seed = 0;
    ResponseHeader header;
    std::unique_ptr<CompletionEngine::Slot> slot;
    std::unique_ptr<InFlight> in_flight;
    Clock::time_point received;
    bool first_token_seen = false;
    bool client_gone = false;  // a stream's write failed: stop generating
  };
  struct ChoiceOutcome {
    Choice choice;
    int64_t completion_tokens = 0;
  };
  // Receives each piece of text as it becomes showable; false when the client has gone.
  using TextSink = std::function<bool(std::string_view)>;

  void Routes();
  void HandleCompletion(const httplib::Request& req, httplib::Response& res, bool simple);
  // Parses, tokenizes and checks a request and takes a slot; an error is the answer to send.
  ApiResult<std::shared_ptr<Job>> PrepareJob(const std::string& body, bool simple);
  // Generates choice `choice_in_prompt` of prompt `prompt_index`; tail text and finish reason
  // are in the outcome, earlier pieces went to `sink`.
  Result<ChoiceOutcome> RunChoice(Job& job, size_t prompt_index, int choice_in_prompt,
                                  const TextSink& sink);
  // Runs every choice of a non-streaming request.
  ApiResult<std::vector<ChoiceOutcome>> RunAll(Job& job);
  // Writes the whole event stream of a streaming request; false when the client went away.
  bool Stream(Job& job, httplib::DataSink& sink);
  ApiError GenerationError(const Status& status) const;
  void HandleHealth(httplib::Response& res);
  void HandleMetrics(httplib::Response& res);

  CompletionEngine& engine_;
  ServerOptions options_;
  ModelInfo model_;
  const int64_t started_ = UnixTime();
  httplib::Server http_;
  int port_ = 0;
  ServeMetrics metrics_;
  std::atomic<int> in_flight_{0};
};

Status Server::Impl::Bind() {
  // One thread per connection being served: every allowed generation, plus room for /health,
  // /metrics and the requests refused with 429.
  const size_t threads = static_cast<size_t>(engine_.max_sequences()) + 8;
  http_.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  http_.set_payload_max_length(options_.max_body_bytes);
  engine_.SetStepObserver([this](const net::StepTimings& step) {
    std::vector<std::pair<double, double>> stages;
    double accounted = 0;
    for (const net::StageTiming& stage : step.stages) {
      stages.emplace_back(stage.queue_ns / 1e9, stage.compute_ns / 1e9);
      accounted += (stage.queue_ns + stage.compute_ns) / 1e9;
    }
    metrics_.ObservePipelineStep(stages, std::max(0.0, step.total_seconds - accounted));
  });
  Routes();
  if (options_.port == 0) {
    port_ = http_.bind_to_any_port(options_.host);
    if (port_ <= 0) return Status::Error(fmt::format("cannot listen on {}:0", options_.host));
  } else {
    if (!http_.bind_to_port(options_.host, options_.port)) {
      return Status::Error(fmt::format("cannot listen on {}:{} (in use, or not an address here?)",
                                       options_.host, options_.port));
    }
    port_ = options_.port;
  }
  return Status::Ok();
}

Status Server::Impl::Serve() {
  if (!http_.listen_after_bind()) return Status::Error("the HTTP server stopped unexpectedly");
  return Status::Ok();
}

void Server::Impl::Routes() {
  http_.Post("/v1/completions", [this](const httplib::Request& req, httplib::Response& res) {
    HandleCompletion(req, res, /*simple=*/false);
  });
  http_.Post("/generate", [this](const httplib::Request& req, httplib::Response& res) {
    HandleCompletion(req, res, /*simple=*/true);
  });
  http_.Get("/v1/models", [this](const httplib::Request&, httplib::Response& res) {
    SendJson(res, 200, ModelList(model_.name, started_));
  });
  http_.Get("/v1/models/(.+)", [this](const httplib::Request& req, httplib::Response& res) {
    if (req.matches[1] == model_.name)
      return SendJson(res, 200, ModelObject(model_.name, started_));
    ApiError error =
        InvalidRequest(fmt::format("the model '{}' does not exist; this server serves '{}'",
                                   req.matches[1].str(), model_.name),
                       "model");
    error.http_status = 404;
    error.code = "model_not_found";
    SendError(res, error);
  });
  http_.Get("/health",
            [this](const httplib::Request&, httplib::Response& res) { HandleHealth(res); });
  http_.Get("/metrics",
            [this](const httplib::Request&, httplib::Response& res) { HandleMetrics(res); });
  http_.Get("/", [](const httplib::Request&, httplib::Response& res) {
    res.set_content(web::kIndexHtml, web::kIndexHtmlSize, "text/html; charset=utf-8");
  });

  // httplib's own refusals (413 body too large, 404 no route, 400 unparsable HTTP) get a body
  // in OpenAI's error shape too; answers we made already have one.
  http_.set_error_handler([this](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty() || res.content_provider_) return;
    ApiError error = InvalidRequest(fmt::format("{} {} failed", req.method, req.path));
    error.http_status = res.status;
    if (res.status == 413) {
      error.message = fmt::format("the request body is larger than {} bytes (--max-body-bytes)",
                                  options_.max_body_bytes);
      error.code = "request_too_large";
    } else if (res.status == 404) {
      error.message = fmt::format("there is no {} {}", req.method, req.path);
      error.code = "not_found";
    } else if (res.status == 400) {
      error.message = "malformed HTTP request";
    } else if (res.status >= 500) {
      error.type = "server_error";
    }
    SendError(res, error);
  });
  http_.set_exception_handler(
      [](const httplib::Request&, httplib::Response& res, std::exception_ptr exception) {
        std::string what = "unknown exception";
        try {
          std::rethrow_exception(exception);
        } catch (const std::exception& e) {
          what = e.what();
        } catch (...) {
        }
        SendError(res, ServerError(500, "internal error: " + what));
      });
  http_.set_logger([this](const httplib::Request& req, const httplib::Response& res) {
    metrics_.CountRequest(RouteLabel(req.path), res.status);
    Log("serve", "{} {} {} {}", req.remote_addr, req.method, req.path, res.status);
  });
}

ApiResult<std::shared_ptr<Server::Impl::Job>> Server::Impl::PrepareJob(const std::string& body,
                                                                       bool simple) {
  auto parsed = simple ? ParseGenerateRequest(body, model_) : ParseCompletionRequest(body, model_);
  if (!parsed.ok()) return parsed.error();
  auto job = std::make_shared<Job>();
  job->received = Clock::now();
  job->request = std::move(parsed.value());
  const Tokenizer& tokenizer = engine_.tokenizer();
  for (const Prompt& prompt : job->request.prompts) {
    std::vector<TokenId> ids = prompt.text ? tokenizer.Encode(*prompt.text) : prompt.ids;
    if (auto error = CheckTokenIds(ids, model_.vocab_size)) return *error;
    if (ids.empty()) {
      // GPT-2 samples unconditionally from <|endoftext|>, as dgpt generate does.
      if (!tokenizer.eos_id()) return InvalidRequest("the prompt is empty", "prompt");
      ids.push_back(*tokenizer.eos_id());
    }
    if (auto error = CheckPromptFits(ids.size(), job->request.max_tokens, model_.context_length)) {
      return *error;
    }
    job->prompts.push_back(std::move(ids));
  }
  job->slot = engine_.TryAcquireSlot();
  if (!job->slot) {
    metrics_.CountBusyRejection();
    ApiError error =
        ServerError(429,
                    fmt::format("the server is busy: {} completions are running (--max-sequences); "
                                "retry later",
                                engine_.max_sequences()),
                    "server_busy");
    error.type = "rate_limit_error";
    return error;
  }
  job->seed = job->request.seed ? *job->request.seed : std::random_device{}();
  job->header = {NewCompletionId(), UnixTime(), model_.name};
  return job;
}

ApiError Server::Impl::GenerationError(const Status& status) const {
  if (engine_.stopping()) return ServerError(503, "the server is shutting down", "shutting_down");
  // A pipeline failure names the stage; it is the cluster, not the request, that is at fault.
  if (engine_.uses_pipeline()) return ServerError(503, status.message(), "service_unavailable");
  return ServerError(500, status.message());
}

Result<Server::Impl::ChoiceOutcome> Server::Impl::RunChoice(Job& job, size_t prompt_index,
                                                            int choice_in_prompt,
                                                            const TextSink& sink) {
  const CompletionRequest& request = job.request;
  const Tokenizer& tokenizer = engine_.tokenizer();
  GenerationOptions options;
  options.max_tokens = request.max_tokens;
  options.sampling = request.sampling;
  options.sampling.seed = job.seed + static_cast<uint64_t>(choice_in_prompt);
  options.end_of_text = tokenizer.eos_id();
  options.ignore_end_of_text = request.ignore_eos;

  TextStream stream(tokenizer, request.stop);
  Clock::time_point last_token = Clock::now();
  bool first_of_choice = true;
  auto on_token = [&](TokenId id) {
    const Clock::time_point now = Clock::now();
    if (!job.first_token_seen) {
      metrics_.ObserveFirstTokenSeconds(std::chrono::duration<double>(now - job.received).count());
      job.first_token_seen = true;
    } else if (!first_of_choice) {
      metrics_.ObserveStepSeconds(std::chrono::duration<double>(now - last_token).count());
    }
    first_of_choice = false;
    last_token = now;
    if (id >= tokenizer.vocab_size()) return true;  // a model slot with no text
    // <|endoftext|> ends the completion (Generate stops after it); it is not text.
    if (id == tokenizer.eos_id() && !request.ignore_eos) return true;
    const std::string piece = stream.Push(id);
    if (!piece.empty() && sink && !sink(piece)) {
      job.client_gone = true;
      return false;
    }
    return !stream.stopped();
  };
  auto result = engine_.Run(*job.slot, job.prompts[prompt_index], options, on_token);
  if (!result.ok()) return result.status();
  metrics_.CountTokens(static_cast<int64_t>(result->prompt_ids.size()),
                       static_cast<int64_t>(result->generated_ids.size()));
  if (job.client_gone) return Status::Error("the client went away");
  if (result->stop_reason == StopReason::kCaller && !stream.stopped()) {
    return Status::Error("the server is shutting down");
  }
  ChoiceOutcome outcome;
  outcome.choice.index = static_cast<int>(prompt_index) * request.n + choice_in_prompt;
  outcome.choice.text = stream.Finish();  // what is still held back
  outcome.choice.finish_reason =
      stream.stopped() || result->stop_reason == StopReason::kEndOfText ? "stop" : "length";
  outcome.completion_tokens = static_cast<int64_t>(result->generated_ids.size());
  return outcome;
}

ApiResult<std::vector<Server::Impl::ChoiceOutcome>> Server::Impl::RunAll(Job& job) {
  std::vector<ChoiceOutcome> outcomes;
  for (size_t i = 0; i < job.prompts.size(); ++i) {
    for (int j = 0; j < job.request.n; ++j) {
      std::string text;
      auto outcome = RunChoice(job, i, j, [&](std::string_view piece) {
        text += piece;
        return true;
      });
      if (!outcome.ok()) return GenerationError(outcome.status());
      outcome->choice.text = text + outcome->choice.text;
      outcomes.push_back(std::move(outcome.value()));
    }
  }
  return outcomes;
}

bool Server::Impl::Stream(Job& job, httplib::DataSink& sink) {
  auto send = [&](std::string_view event) { return sink.write(event.data(), event.size()); };
  Usage usage;
  for (size_t i = 0; i < job.prompts.size(); ++i) {
    usage.prompt_tokens += static_cast<int64_t>(job.prompts[i].size());
    for (int j = 0; j < job.request.n; ++j) {
      const int index = static_cast<int>(i) * job.request.n + j;
      auto outcome = RunChoice(job, i, j, [&](std::string_view piece) {
        return send(SseEvent(CompletionChunk(job.header, index, piece, "")));
      });
      if (!outcome.ok()) {
        if (job.client_gone) return false;
        // The status line is long gone: the error travels as an event, as OpenAI does.
        if (!send(SseEvent(ErrorJson(GenerationError(outcome.status()))))) return false;
        sink.done();
        return true;
      }
      usage.completion_tokens += outcome->completion_tokens;
      if (!send(SseEvent(CompletionChunk(job.header, index, outcome->choice.text,
                                         outcome->choice.finish_reason)))) {
        return false;
      }
    }
  }
  if (job.request.include_usage && !send(SseEvent(UsageChunk(job.header, usage)))) return false;
  if (!send(kSseDone)) return false;
  sink.done();
  return true;
}

void Server::Impl::HandleCompletion(const httplib::Request& req, httplib::Response& res,
                                    bool simple) {
  auto in_flight = std::make_unique<InFlight>(in_flight_);
  auto prepared = PrepareJob(req.body, simple);
  if (!prepared.ok()) return SendError(res, prepared.error());
  std::shared_ptr<Job> job = std::move(prepared.value());
  job->in_flight = std::move(in_flight);  // a stream is in flight until its last event

  if (job->request.stream) {
    res.set_header("Cache-Control", "no-cache");
    res.set_header("X-Accel-Buffering", "no");  // tell proxies not to hold events back
    // Runs after this handler returns, on the same thread; `job` keeps the slot until then.
    res.set_chunked_content_provider(
        "text/event-stream", [this, job](size_t /*offset*/, httplib::DataSink& sink) {
          bool delivered = false;
          try {
            delivered = Stream(*job, sink);
          } catch (const std::exception& e) {
            Log("serve", "stream failed: {}", e.what());
          }
          metrics_.ObserveRequestSeconds(SecondsSince(job->received));
          job->slot.reset();  // free the slot now, not when httplib drops the response
          job->in_flight.reset();
          return delivered;
        });
    return;
  }

  auto outcomes = RunAll(*job);
  job->slot.reset();
  metrics_.ObserveRequestSeconds(SecondsSince(job->received));
  if (!outcomes.ok()) return SendError(res, outcomes.error());
  Usage usage;
  for (const auto& prompt : job->prompts)
    usage.prompt_tokens += static_cast<int64_t>(prompt.size());
  std::vector<Choice> choices;
  for (ChoiceOutcome& outcome : outcomes.value()) {
    usage.completion_tokens += outcome.completion_tokens;
    choices.push_back(std::move(outcome.choice));
  }
  if (simple) {
    SendJson(res, 200,
             {{"text", choices.front().text},
              {"finish_reason", choices.front().finish_reason},
              {"seed", job->seed},
              {"usage",
               {{"prompt_tokens", usage.prompt_tokens},
                {"completion_tokens", usage.completion_tokens},
                {"total_tokens", usage.prompt_tokens + usage.completion_tokens}}}});
    return;
  }
  SendJson(res, 200, CompletionResponse(job->header, choices, usage));
}

void Server::Impl::HandleHealth(httplib::Response& res) {
  const std::vector<StageStatus> stages = engine_.CheckHealth();
  bool all_up = true;
  json list = json::array();
  for (const StageStatus& stage : stages) {
    all_up &= stage.up;
    list.push_back({{"address", stage.address},
                    {"name", stage.name},
                    {"layers", {stage.layer_begin, stage.layer_end}},
                    {"up", stage.up},
                    {"last_latency_ms", stage.last_latency_ms}});
  }
  // 503 when degraded, so a load balancer's plain status check sees it.
  SendJson(res, all_up ? 200 : 503,
           {{"status", all_up ? "ok" : "degraded"},
            {"model", model_.name},
            {"sequences_running", engine_.sequences_running()},
            {"max_sequences", engine_.max_sequences()},
            {"stages", std::move(list)}});
}

void Server::Impl::HandleMetrics(httplib::Response& res) {
  ServeMetrics::Gauges gauges;
  gauges.sequences_running = engine_.sequences_running();
  gauges.max_sequences = engine_.max_sequences();
  gauges.requests_in_flight = in_flight_.load();
  res.set_content(metrics_.Render(gauges, engine_.CollectStats()),
                  "text/plain; version=0.0.4; charset=utf-8");
}

Result<std::unique_ptr<Server>> Server::Bind(CompletionEngine& engine,
                                             const ServerOptions& options) {
  auto impl = std::make_unique<Impl>(engine, options);
  DGPT_RETURN_IF_ERROR(impl->Bind());
  return std::unique_ptr<Server>(new Server(std::move(impl)));
}

Server::Server(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Server::~Server() = default;
int Server::port() const {
  return impl_->port();
}
Status Server::Serve() {
  return impl_->Serve();
}
void Server::Stop() {
  impl_->Stop();
}

}  // namespace dgpt::serve
