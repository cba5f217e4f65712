#include "tools/pipeline_args.h"

#include <fmt/format.h>

#include <cstdio>
#include <cstdlib>

namespace dgpt::cli {

void AddPipelineOptions(CLI::App* cmd, PipelineArgs* args) {
  const char* group = "Pipeline";
  cmd->add_option("--workers,-w", args->workers, "Worker addresses HOST:PORT, in chain order")
      ->delimiter(',')
      ->group(group);
  cmd->add_option("--local-workers", args->local_workers,
                  "Start N worker processes on loopback and run through them")
      ->check(CLI::Range(0, 64))
      ->group(group);
  cmd->add_option("--layers", args->layers,
                  "Layers per worker: even (default), auto (by cores), or a:b,c:d,...")
      ->group(group);
  cmd->add_option("--local-layers", args->local_layers,
                  "Run these layers here (a prefix 0:k or a suffix k:n)")
      ->group(group);
  cmd->add_option("--wire-dtype", args->wire_dtype,
                  "Activations on the wire: f32 (exact) or f16 (half the bytes, rounded)")
      ->capture_default_str()
      ->group(group);
  cmd->add_option("--auth-key-file", args->auth_key_file, "Pre-shared key for the workers")
      ->group(group);
  cmd->add_option("--return-listen", args->return_listen,
                  "HOST:PORT the last worker connects back to (default: a free port on the "
                  "address that reaches it); fix it to open one port in a firewall")
      ->group(group);
  cmd->add_option("--timeout", args->timeout_s, "Seconds to wait for a stage before failing")
      ->capture_default_str()
      ->group(group);
  cmd->add_option("--worker-threads", args->worker_threads,
                  "Threads per --local-workers process (default: cores / N)")
      ->group(group);
}

Result<std::optional<LayerRange>> LocalLayers(const PipelineArgs& args) {
  if (args.local_layers.empty()) return std::optional<LayerRange>();
  LayerRange range;
  char extra = 0;
  if (std::sscanf(args.local_layers.c_str(), "%d:%d%c", &range.begin, &range.end, &extra) != 2 ||
      range.begin < 0 || range.end <= range.begin) {
    return Status::Error(
        fmt::format("--local-layers \"{}\" is not a layer range like 0:4", args.local_layers));
  }
  if (!args.used()) return Status::Error("--local-layers needs --workers or --local-workers");
  return std::optional<LayerRange>(range);
}

Result<net::PipelineOptions> MakePipelineOptions(const PipelineArgs& args,
                                                 const WeightFormatArgs& formats,
                                                 const std::string& model_dir, int prefill_chunk,
                                                 int threads, int worker_sequences,
                                                 std::unique_ptr<LocalWorkers>* local_workers) {
  net::PipelineOptions pipeline;
  pipeline.workers = args.workers;
  pipeline.layers = args.layers;
  auto local_layers = LocalLayers(args);
  if (!local_layers.ok()) return local_layers.status();
  pipeline.local_layers = *local_layers;
  pipeline.prefill_chunk = prefill_chunk;
  pipeline.timeout = net::Duration(static_cast<int64_t>(args.timeout_s * 1000));
  pipeline.return_listen = args.return_listen;
  if (args.wire_dtype == "f16") {
    pipeline.wire_dtype = net::WireDType::kF16;
  } else if (args.wire_dtype != "f32") {
    return Status::Error("--wire-dtype must be f32 or f16");
  }
  if (!args.auth_key_file.empty()) {
    auto key = net::LoadAuthKey(args.auth_key_file);
    if (!key.ok()) return key.status();
    pipeline.auth_key = *key;
  }
  if (args.local_workers > 0) {
    const int worker_threads =
        args.worker_threads > 0 ? args.worker_threads : std::max(1, threads / args.local_workers);
    std::vector<std::string> worker_args = {"--model",         model_dir,
                                            "--threads",       std::to_string(worker_threads),
                                            "--max-sequences", std::to_string(worker_sequences)};
    if (!args.auth_key_file.empty()) {
      worker_args.insert(worker_args.end(), {"--auth-key-file", args.auth_key_file});
    }
    if (!formats.dtype.empty()) worker_args.insert(worker_args.end(), {"--dtype", formats.dtype});
    const char* tmp = std::getenv("TMPDIR");
    auto workers = LocalWorkers::Spawn(args.local_workers, worker_args, tmp ? tmp : "/tmp");
    if (!workers.ok()) return workers.status();
    *local_workers = std::move(workers).value();
    const auto& addresses = (*local_workers)->addresses();
    pipeline.workers.insert(pipeline.workers.end(), addresses.begin(), addresses.end());
  }
  return pipeline;
}

}  // namespace dgpt::cli
