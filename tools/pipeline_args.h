// The pipeline options `dgpt generate` and `dgpt serve` share: their flags, and turning them into
// net::PipelineOptions (starting --local-workers processes on the way).
#pragma once

#include <CLI/CLI.hpp>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "engine/checkpoint.h"
#include "net/coordinator.h"
#include "tools/cli_util.h"
#include "tools/local_workers.h"

namespace dgpt::cli {

struct PipelineArgs {
  std::vector<std::string> workers;
  int local_workers = 0;
  int worker_threads = 0;  // per local worker; 0 = threads / local_workers
  std::string layers;
  std::string local_layers;
  std::string wire_dtype = "f32";
  std::string auth_key_file;
  std::string return_listen;
  double timeout_s = 60;

  bool used() const { return !workers.empty() || local_workers > 0; }
};

// Adds --workers, --local-workers, --layers, --local-layers, --wire-dtype, --auth-key-file,
// --return-listen, --timeout and --worker-threads in a "Pipeline" group.
void AddPipelineOptions(CLI::App* command, PipelineArgs* args);

// --local-layers as a range (nullopt when not given); an error when malformed or given without
// any workers.
Result<std::optional<LayerRange>> LocalLayers(const PipelineArgs& args);

// Everything but the model: checks the flags, loads the auth key, and starts the local workers
// (kept alive by *local_workers; each allows `worker_sequences` KV caches and computes in the
// command's --dtype).
Result<net::PipelineOptions> MakePipelineOptions(const PipelineArgs& args,
                                                 const WeightFormatArgs& formats,
                                                 const std::string& model_dir, int prefill_chunk,
                                                 int threads, int worker_sequences,
                                                 std::unique_ptr<LocalWorkers>* local_workers);

}  // namespace dgpt::cli
