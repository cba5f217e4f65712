// dgpt generate: load a model, stream a completion of a prompt to stdout — in this process, or
// through a pipeline of workers (--workers, --local-workers).
#include <fmt/format.h>
#include <signal.h>

#include <cstdio>
#include <iostream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <random>

#include "engine/checkpoint.h"
#include "engine/generator.h"
#include "engine/ops.h"
#include "net/coordinator.h"
#include "tokenizer/tokenizer.h"
#include "tools/cli_util.h"
#include "tools/commands.h"
#include "tools/local_workers.h"
#include "tools/pipeline_args.h"
#include "tools/text_stream.h"

namespace dgpt::cli {
namespace {

struct GenerateArgs {
  std::string model_dir;
  WeightFormatArgs formats;
  std::optional<std::string> prompt;
  std::string prompt_ids;
  bool lines = false;
  int max_tokens = 64;
  SamplingOptions sampling;
  std::optional<uint64_t> seed;
  std::vector<std::string> stop;
  bool ignore_eos = false;
  bool truncate = false;
  int threads = 0;
  bool json = false;
  std::string logits_out;
  int prefill_chunk = 128;
  PipelineArgs pipeline;
};

// Everything one run needs, set up once and reused for every prompt (--lines).
struct Session {
  explicit Session(const GenerateArgs& arguments) : args(arguments) {}
  const GenerateArgs& args;
  int threads = 1;
  std::unique_ptr<ThreadPool> pool;
  std::unique_ptr<Checkpoint> model;
  std::unique_ptr<Tokenizer> tokenizer;
  std::unique_ptr<LocalWorkers> local_workers;
  std::unique_ptr<BlockRunner> blocks;
  net::Pipeline* pipeline = nullptr;  // = blocks, when running through workers
  std::FILE* logits_file = nullptr;
  bool warned_random = false;

  ~Session() {
    blocks.reset();  // disconnect before the local workers stop
    if (logits_file) std::fclose(logits_file);
  }
};

Status SetUp(Session& s) {
  const GenerateArgs& args = s.args;
  s.threads = args.threads > 0 ? args.threads : DefaultThreadCount();
  SetBlasThreads(s.threads);
  s.pool = std::make_unique<ThreadPool>(s.threads);

  auto local_layers = LocalLayers(args.pipeline);
  if (!local_layers.ok()) return local_layers.status();
  // The coordinator maps the embeddings, the head and its own layers; the workers' layers are
  // only hashed (for the fingerprints), never computed here.
  LoadOptions load;
  DGPT_RETURN_IF_ERROR(ApplyWeightFormats(args.formats, &load));
  if (args.pipeline.used()) load.layers = local_layers->value_or(LayerRange{0, 0});
  auto model = Checkpoint::Load(args.model_dir, load);
  if (!model.ok()) return model.status();
  s.model = std::move(model).value();
  auto tokenizer = LoadTokenizer(args.model_dir);
  if (!tokenizer.ok()) return tokenizer.status();
  s.tokenizer = std::move(tokenizer).value();
  if (s.tokenizer->vocab_size() > s.model->config().vocab_size) {
    return Status::Error(fmt::format("{}: the tokenizer has {} tokens but the model only {}",
                                     args.model_dir, s.tokenizer->vocab_size(),
                                     s.model->config().vocab_size));
  }
  if (!args.logits_out.empty()) {
    s.logits_file = std::fopen(args.logits_out.c_str(), "wb");
    if (!s.logits_file) return Status::Error("cannot write " + args.logits_out);
  }
  if (!args.pipeline.used()) {
    s.blocks = std::make_unique<LocalBlockRunner>(*s.model, *s.pool, args.prefill_chunk);
    return Status::Ok();
  }

  auto pipeline = MakePipelineOptions(args.pipeline, args.formats, args.model_dir,
                                      args.prefill_chunk, s.threads,
                                      /*worker_sequences=*/16, &s.local_workers);
  if (!pipeline.ok()) return pipeline.status();
  auto connected = net::Pipeline::Connect(*s.model, *s.pool, *pipeline);
  if (!connected.ok()) return connected.status();
  std::fprintf(stderr, "pipeline: %s\n", connected.value()->PlanDescription().c_str());
  s.pipeline = connected.value().get();
  s.blocks = std::move(connected).value();
  return Status::Ok();
}

// What each worker reports after a request: its layers, KV slots in use, work done.
nlohmann::json StageReport(net::Pipeline& pipeline) {
  nlohmann::json stages = nlohmann::json::array();
  auto stats = pipeline.CollectStats();
  if (!stats.ok()) return {{"error", stats.status().message()}};
  for (size_t i = 0; i < stats->size(); ++i) {
    const net::StatsReply& st = (*stats)[i];
    stages.push_back({{"address", pipeline.stages()[i].address},
                      {"layers", {st.layer_begin, st.layer_end}},
                      {"sequences_in_use", st.sequences_in_use},
                      {"max_sequences", st.max_sequences},
                      {"kv_cache_bytes", st.kv_cache_bytes},
                      {"forwards", st.forwards},
                      {"tokens", st.tokens},
                      {"compute_seconds", st.compute_ns / 1e9}});
  }
  return stages;
}

// Generates one completion; streams text unless --json. Returns false on failure (reported).
bool RunOne(Session& s, const std::string* text, const std::vector<TokenId>* ids) {
  const GenerateArgs& args = s.args;
  std::vector<TokenId> prompt = ids ? *ids : s.tokenizer->Encode(*text);

  GenerationOptions options;
  options.max_tokens = args.max_tokens;
  options.sampling = args.sampling;
  options.sampling.seed = args.seed ? *args.seed : std::random_device{}();
  options.end_of_text = s.tokenizer->eos_id();
  options.ignore_end_of_text = args.ignore_eos;
  options.truncate_prompt = args.truncate;
  if (s.logits_file) {
    options.observe_logits = [&](std::span<const float> logits) {
      std::fwrite(logits.data(), sizeof(float), logits.size(), s.logits_file);
    };
  }

  TextStream stream(*s.tokenizer, args.stop);
  bool printed = false;
  auto on_token = [&](TokenId id) {
    if (!s.warned_random) WarnIfRandomModel(args.model_dir);  // once the run is known to go
    s.warned_random = true;
    if (id >= s.tokenizer->vocab_size()) return true;  // a model slot with no text
    // <|endoftext|> ends the completion (Generate stops after it); it is not text to print.
    if (id == s.tokenizer->eos_id() && !args.ignore_eos) return true;
    const std::string chunk = stream.Push(id);
    if (!args.json) {
      std::fwrite(chunk.data(), 1, chunk.size(), stdout);
      std::fflush(stdout);
      printed |= !chunk.empty();
    }
    return !stream.stopped();
  };
  auto result = Generate(*s.model, *s.blocks, prompt, options, *s.pool, on_token);
  if (!result.ok()) {
    if (args.json && args.lines) {
      std::cout << nlohmann::json{{"error", result.status().message()}}.dump() << std::endl;
    }
    if (!args.json && printed) std::fputc('\n', stdout);  // end the partial line
    std::fflush(stdout);
    ReportError("generate", result.status().message());
    return false;
  }
  const std::string tail = stream.Finish();
  const GenerationResult& r = *result;
  const double prompt_rate = r.prompt_ids.size() / std::max(r.prefill_seconds, 1e-9);
  const size_t decoded = r.generated_ids.empty() ? 0 : r.generated_ids.size() - 1;
  const double decode_rate = decoded / std::max(r.decode_seconds, 1e-9);
  if (args.json) {
    nlohmann::json out = {
        {"model", args.model_dir},
        {"prompt_ids", r.prompt_ids},
        {"generated_ids", r.generated_ids},
        {"text", stream.text()},
        {"stop_reason", stream.stopped() ? "stop" : StopReasonName(r.stop_reason)},
        {"seed", options.sampling.seed},
        {"threads", s.threads},
        {"timings",
         {{"prompt_tokens", r.prompt_ids.size()},
          {"prefill_seconds", r.prefill_seconds},
          {"prompt_tokens_per_second", prompt_rate},
          {"first_token_seconds", r.first_token_seconds},
          {"generated_tokens", r.generated_ids.size()},
          {"decode_seconds", r.decode_seconds},
          {"decode_tokens_per_second", decode_rate}}}};
    if (s.pipeline) out["stages"] = StageReport(*s.pipeline);
    std::cout << out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << std::endl;
  } else {
    std::fwrite(tail.data(), 1, tail.size(), stdout);
    std::fputc('\n', stdout);
    std::fflush(stdout);
  }
  std::fprintf(stderr,
               "prompt: %zu tokens, %.1f tok/s | first token: %.0f ms | generation: %zu tokens, "
               "%.1f tok/s | seed %llu, %d threads\n",
               r.prompt_ids.size(), prompt_rate, r.first_token_seconds * 1e3,
               r.generated_ids.size(), decode_rate,
               static_cast<unsigned long long>(options.sampling.seed), s.threads);
  return true;
}

int RunGenerate(const GenerateArgs& args) {
  signal(SIGPIPE, SIG_IGN);  // a dead worker is an error message, not a silent exit
  if (Status status = args.sampling.Validate(); !status.ok()) {
    return ReportError("generate", status.message());
  }
  if (args.prefill_chunk < 1) return ReportError("generate", "--prefill-chunk must be >= 1");
  Session session(args);
  if (Status status = SetUp(session); !status.ok()) {
    return ReportError("generate", status.message());
  }
  if (!args.prompt_ids.empty()) {
    auto ids = ParseTokenIds(args.prompt_ids);
    if (!ids.ok()) return ReportError("generate", ids.status().message());
    return RunOne(session, nullptr, &ids.value()) ? 0 : 1;
  }
  if (args.prompt) return RunOne(session, &*args.prompt, nullptr) ? 0 : 1;
  if (!args.lines) {
    const std::string text((std::istreambuf_iterator<char>(std::cin)),
                           std::istreambuf_iterator<char>());
    return RunOne(session, &text, nullptr) ? 0 : 1;
  }
  bool all_ok = true;
  for (std::string line; std::getline(std::cin, line);) all_ok &= RunOne(session, &line, nullptr);
  return all_ok ? 0 : 1;
}

}  // namespace

void AddGenerateCommand(CLI::App& app, CommandRunner* runner) {
  auto args = std::make_shared<GenerateArgs>();
  CLI::App* cmd = app.add_subcommand("generate", "Generate text from a prompt");
  cmd->add_option("--model,-m", args->model_dir,
                  "Model folder (config.json, model.safetensors, tokenizer files)")
      ->required();
  cmd->add_option("--prompt,-p", args->prompt, "Prompt text (default: read stdin)");
  cmd->add_option("--prompt-ids", args->prompt_ids,
                  "Prompt as token ids, e.g. 464,2068 (instead of text)");
  cmd->add_flag("--lines", args->lines,
                "Read stdin line by line: one completion per line (with --json, one object each)");
  cmd->add_option("--max-tokens,-n", args->max_tokens, "Tokens to generate")
      ->capture_default_str()
      ->check(CLI::Range(0, 1 << 20));
  cmd->add_option("--temperature,-t", args->sampling.temperature, "0 = greedy")
      ->capture_default_str();
  cmd->add_option("--top-k", args->sampling.top_k, "Keep the k most likely tokens (0 = off)")
      ->capture_default_str();
  cmd->add_option("--top-p", args->sampling.top_p, "Nucleus sampling mass (1 = off)")
      ->capture_default_str();
  cmd->add_option("--repetition-penalty", args->sampling.repetition_penalty, "1 = off")
      ->capture_default_str();
  cmd->add_option("--seed", args->seed, "Random seed (default: random, printed)");
  cmd->add_option("--stop", args->stop, "Stop when this text appears (repeatable)");
  cmd->add_flag("--ignore-eos", args->ignore_eos, "Keep going after <|endoftext|>");
  cmd->add_flag("--truncate", args->truncate,
                "Drop the oldest prompt tokens when the prompt does not fit the context");
  cmd->add_option("--threads", args->threads, "Threads (default: all cores)");
  cmd->add_flag("--json", args->json, "Print one JSON object instead of streaming text");
  cmd->add_option("--logits-out", args->logits_out,
                  "Write each step's logits (float32 [steps, vocab]) to this file");
  cmd->add_option("--prefill-chunk", args->prefill_chunk, "Prompt tokens per forward chunk")
      ->capture_default_str();

  AddWeightFormatOptions(cmd, &args->formats, /*with_head=*/true);
  AddPipelineOptions(cmd, &args->pipeline);
  cmd->callback([args, runner] { *runner = [args] { return RunGenerate(*args); }; });
}

}  // namespace dgpt::cli
