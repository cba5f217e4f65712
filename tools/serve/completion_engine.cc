#include "tools/serve/completion_engine.h"

#include <fmt/format.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>

#include "engine/ops.h"
#include "engine/resident_memory.h"
#include "net/coordinator.h"
#include "tools/local_workers.h"

namespace dgpt::serve {

// LocalBlockRunner plus the counters a worker would report in STATS, so /metrics and /health
// look the same in both modes.
class CompletionEngine::CountingRunner : public BlockRunner {
 public:
  explicit CountingRunner(CompletionEngine& engine)
      : engine_(engine), blocks_(*engine.model_, *engine.pool_, engine.prefill_chunk_) {}
  ~CountingRunner() override { End(); }

  Status Begin(int capacity) override {
    if (!active_) ++engine_.local_sequences_;
    active_ = true;
    return blocks_.Begin(capacity);
  }
  Status Forward(float* x, int T, bool all_rows) override {
    const auto start = std::chrono::steady_clock::now();
    Status status = blocks_.Forward(x, T, all_rows);
    const auto elapsed = std::chrono::steady_clock::now() - start;
    engine_.local_compute_ns_ +=
        std::chrono::duration_cast<std::chrono::nanoseconds>(elapsed).count();
    ++engine_.local_forwards_;
    engine_.local_tokens_ += T;
    return status;
  }
  void End() override {
    blocks_.End();
    if (active_) --engine_.local_sequences_;
    active_ = false;
  }

 private:
  CompletionEngine& engine_;
  LocalBlockRunner blocks_;
  bool active_ = false;
};

namespace {

// "models/gpt2/" -> "gpt2": what clients put in "model".
std::string ModelName(const std::string& model_dir) {
  std::filesystem::path path(model_dir);
  path = path.lexically_normal();
  if (!path.has_filename()) path = path.parent_path();
  std::string name = path.filename().string();
  if (name.empty() || name == "." || name == "..") {
    name = std::filesystem::absolute(model_dir).lexically_normal().filename().string();
  }
  return name.empty() ? "model" : name;
}

}  // namespace

Result<std::unique_ptr<CompletionEngine>> CompletionEngine::Start(const EngineOptions& options) {
  const bool uses_pipeline = options.pipeline.used();
  if (options.max_sequences < 1) return Status::Error("--max-sequences must be >= 1");
  if (options.prefill_chunk < 1) return Status::Error("--prefill-chunk must be >= 1");
  auto engine = std::unique_ptr<CompletionEngine>(new CompletionEngine());
  engine->model_name_ = ModelName(options.model_dir);
  engine->max_sequences_ = options.max_sequences;
  engine->prefill_chunk_ = options.prefill_chunk;
  const int threads = options.threads > 0 ? options.threads : DefaultThreadCount();
  SetBlasThreads(threads);
  engine->pool_ = std::make_unique<ThreadPool>(threads);

  auto local_layers = cli::LocalLayers(options.pipeline);
  if (!local_layers.ok()) return local_layers.status();
  // As in dgpt generate: with workers, this process maps the embeddings, the head and its own
  // layers; the workers' layers are only hashed for the fingerprints.
  LoadOptions load;
  DGPT_RETURN_IF_ERROR(cli::ApplyWeightFormats(options.formats, &load));
  if (uses_pipeline) load.layers = local_layers->value_or(LayerRange{0, 0});
  auto model = Checkpoint::Load(options.model_dir, load);
  if (!model.ok()) return model.status();
  engine->model_ = std::move(model).value();
  engine->logits_batcher_ = std::make_unique<LogitsBatcher>(*engine->model_, *engine->pool_);
  auto tokenizer = LoadTokenizer(options.model_dir);
  if (!tokenizer.ok()) return tokenizer.status();
  engine->tokenizer_ = std::move(tokenizer).value();
  if (engine->tokenizer_->vocab_size() > engine->model_->config().vocab_size) {
    return Status::Error(fmt::format("{}: the tokenizer has {} tokens but the model only {}",
                                     options.model_dir, engine->tokenizer_->vocab_size(),
                                     engine->model_->config().vocab_size));
  }
  if (!uses_pipeline) return engine;

  // Each worker must hold a KV cache for every sequence the server runs at once.
  auto pipeline = cli::MakePipelineOptions(
      options.pipeline, options.formats, options.model_dir, options.prefill_chunk, threads,
      std::max(options.max_sequences, 16), &engine->local_workers_);
  if (!pipeline.ok()) return pipeline.status();
  pipeline->name = "serve";
  pipeline->observe_step = [raw = engine.get()](const net::StepTimings& step) {
    if (raw->step_observer_) raw->step_observer_(step);
  };
  auto connected = net::Pipeline::Connect(*engine->model_, *engine->pool_, *pipeline);
  if (!connected.ok()) return connected.status();
  engine->pipeline_ = std::move(connected).value();
  return engine;
}

CompletionEngine::~CompletionEngine() {
  pipeline_.reset();  // disconnect before the local workers stop
  local_workers_.reset();
}

std::string CompletionEngine::PlanDescription() const {
  if (pipeline_) return pipeline_->PlanDescription();
  return fmt::format("all {} layers in this process", model_->config().n_layer);
}

CompletionEngine::Slot::~Slot() {
  --running_;
}

std::unique_ptr<CompletionEngine::Slot> CompletionEngine::TryAcquireSlot() {
  int running = running_.load();
  do {
    if (running >= max_sequences_) return nullptr;
  } while (!running_.compare_exchange_weak(running, running + 1));
  return std::unique_ptr<Slot>(new Slot(running_));
}

Result<GenerationResult> CompletionEngine::Run(const Slot& /*slot*/, std::vector<TokenId> prompt,
                                               const GenerationOptions& options,
                                               const TokenCallback& on_token) {
  if (stopping_) return Status::Error("the server is shutting down");
  std::unique_ptr<BlockRunner> blocks;
  if (pipeline_) {
    blocks = pipeline_->NewSequence();
  } else {
    blocks = std::make_unique<CountingRunner>(*this);
  }
  auto until_stopped = [&](TokenId id) {
    if (stopping_) return false;
    return on_token ? on_token(id) : true;
  };
  GenerationOptions batched = options;
  batched.logits_batcher = logits_batcher_.get();
  return Generate(*model_, *blocks, std::move(prompt), batched, *pool_, until_stopped);
}

StageStatus CompletionEngine::LocalStage() const {
  StageStatus stage;
  stage.address = "local";
  stage.name = "local";
  stage.layer_begin = 0;
  stage.layer_end = model_->config().n_layer;
  stage.up = true;
  stage.has_stats = true;
  stage.sequences_in_use = local_sequences_.load();
  stage.max_sequences = static_cast<uint32_t>(max_sequences_);
  stage.forwards = local_forwards_.load();
  stage.tokens = local_tokens_.load();
  stage.compute_seconds = local_compute_ns_.load() / 1e9;
  stage.weight_bytes = static_cast<uint64_t>(model_->block_matrix_bytes());
  stage.resident_bytes = ResidentMemoryBytes();
  return stage;
}

namespace {

StageStatus FromStageInfo(const net::StageInfo& info) {
  StageStatus stage;
  stage.address = info.address;
  stage.name = info.name;
  stage.layer_begin = info.layers.begin;
  stage.layer_end = info.layers.end;
  stage.up = info.up;
  stage.last_latency_ms = info.last_latency_ms;
  return stage;
}

}  // namespace

std::vector<StageStatus> CompletionEngine::CheckHealth() {
  if (!pipeline_) return {LocalStage()};
  std::vector<StageStatus> stages;
  for (const net::StageInfo& info : pipeline_->CheckHealth()) {
    stages.push_back(FromStageInfo(info));
  }
  return stages;
}

std::vector<StageStatus> CompletionEngine::CollectStats() {
  if (!pipeline_) return {LocalStage()};
  auto stats = pipeline_->CollectStats();
  std::vector<StageStatus> stages;
  const std::vector<net::StageInfo> infos = pipeline_->stages();
  for (size_t i = 0; i < infos.size(); ++i) {
    StageStatus stage = FromStageInfo(infos[i]);
    if (stats.ok() && i < stats->size()) {
      const net::StatsReply& reply = (*stats)[i];
      stage.has_stats = true;
      stage.sequences_in_use = reply.sequences_in_use;
      stage.max_sequences = reply.max_sequences;
      stage.kv_cache_bytes = reply.kv_cache_bytes;
      stage.forwards = reply.forwards;
      stage.tokens = reply.tokens;
      stage.compute_seconds = reply.compute_ns / 1e9;
      stage.weight_bytes = reply.weight_bytes;
      stage.resident_bytes = reply.resident_bytes;
    }
    stages.push_back(std::move(stage));
  }
  return stages;
}

}  // namespace dgpt::serve
