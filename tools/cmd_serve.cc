// dgpt serve: an OpenAI-compatible HTTP API (and a web page) in front of a model that runs in
// this process or through a pipeline of workers (--workers, --local-workers).
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>

#include "base/log.h"
#include "tools/cli_util.h"
#include "tools/commands.h"
#include "tools/pipeline_args.h"
#include "tools/serve/completion_engine.h"
#include "tools/serve/server.h"

namespace dgpt::cli {
namespace {

struct ServeArgs {
  std::string listen = "127.0.0.1:8080";
  serve::EngineOptions engine;
  size_t max_body_bytes = 1 << 20;
};

// "HOST:PORT" or "[V6]:PORT".
Result<serve::ServerOptions> ParseListen(const std::string& listen) {
  const size_t colon = listen.rfind(':');
  if (colon == std::string::npos || colon == 0) {
    return Status::Error("--listen \"" + listen + "\" is not HOST:PORT");
  }
  serve::ServerOptions options;
  options.host = listen.substr(0, colon);
  if (options.host.size() > 2 && options.host.front() == '[' && options.host.back() == ']') {
    options.host = options.host.substr(1, options.host.size() - 2);
  }
  const std::string port = listen.substr(colon + 1);
  char* end = nullptr;
  const long value = std::strtol(port.c_str(), &end, 10);
  if (port.empty() || *end != '\0' || value < 0 || value > 65535) {
    return Status::Error("--listen \"" + listen + "\": the port must be 0..65535");
  }
  options.port = static_cast<int>(value);
  return options;
}

int RunServe(const ServeArgs& args) {
  // SIGTERM/SIGINT are taken by sigwait below, so block them in every thread started from here.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  signal(SIGPIPE, SIG_IGN);  // a client that hangs up is a failed write, not an exit

  auto server_options = ParseListen(args.listen);
  if (!server_options.ok()) return ReportError("serve", server_options.status().message());
  server_options->max_body_bytes = args.max_body_bytes;

  auto engine = serve::CompletionEngine::Start(args.engine);
  if (!engine.ok()) return ReportError("serve", engine.status().message());
  auto server = serve::Server::Bind(*engine.value(), *server_options);
  if (!server.ok()) return ReportError("serve", server.status().message());
  WarnIfRandomModel(args.engine.model_dir);

  std::fprintf(stderr, "serving %s (%s), at most %d sequences at once\n",
               engine.value()->model_name().c_str(), engine.value()->PlanDescription().c_str(),
               engine.value()->max_sequences());
  const std::string host = server_options->host.find(':') == std::string::npos
                               ? server_options->host
                               : "[" + server_options->host + "]";
  std::fprintf(stderr, "listening on http://%s:%d\n", host.c_str(), server.value()->port());
  std::fflush(stderr);

  Status served;
  std::atomic<bool> serve_failed{false};
  std::thread http_thread([&] {
    served = server.value()->Serve();
    serve_failed = !served.ok();
    if (serve_failed) kill(getpid(), SIGTERM);  // wake the sigwait below
  });
  int received = 0;
  sigwait(&signals, &received);
  if (!serve_failed) {
    Log("serve", "received {}, stopping", received == SIGTERM ? "SIGTERM" : "SIGINT");
  }
  engine.value()->StopAll();  // running generations end at their next token
  server.value()->Stop();
  http_thread.join();
  server.value().reset();
  engine.value().reset();  // disconnects the pipeline, stops local workers
  if (!served.ok()) return ReportError("serve", served.message());
  Log("serve", "stopped");
  return 0;
}

}  // namespace

void AddServeCommand(CLI::App& app, CommandRunner* runner) {
  auto args = std::make_shared<ServeArgs>();
  CLI::App* cmd = app.add_subcommand("serve", "Serve an OpenAI-compatible HTTP API");
  cmd->footer(
      "Routes: POST /v1/completions (OpenAI; extensions top_k, repetition_penalty, ignore_eos),\n"
      "POST /generate, GET /v1/models, GET /health, GET /metrics (Prometheus), GET / (web page).\n"
      "With n > 1, choice j of each prompt is sampled with seed + j; n = 1 and seed S give the\n"
      "same text as `dgpt generate --seed S` with the same sampling options.");
  cmd->add_option("--listen,-l", args->listen, "HOST:PORT to listen on (port 0: any free port)")
      ->capture_default_str();
  cmd->add_option("--model,-m", args->engine.model_dir,
                  "Model folder (config.json, model.safetensors, tokenizer files)")
      ->required();
  cmd->add_option("--max-sequences", args->engine.max_sequences,
                  "Completions running at once; more are refused with 429")
      ->capture_default_str()
      ->check(CLI::Range(1, 1024));
  cmd->add_option("--max-body-bytes", args->max_body_bytes,
                  "Largest request body accepted (413 beyond)")
      ->capture_default_str()
      ->check(CLI::Range(size_t{1}, size_t{1} << 30));
  cmd->add_option("--threads", args->engine.threads, "Compute threads (default: all cores)");
  cmd->add_option("--prefill-chunk", args->engine.prefill_chunk, "Prompt tokens per forward chunk")
      ->capture_default_str();

  AddWeightFormatOptions(cmd, &args->engine.formats, /*with_head=*/true);
  AddPipelineOptions(cmd, &args->engine.pipeline);
  cmd->callback([args, runner] { *runner = [args] { return RunServe(*args); }; });
}

}  // namespace dgpt::cli
