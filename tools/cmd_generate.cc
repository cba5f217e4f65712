// dgpt generate: load a model, stream a completion of a prompt to stdout.
#include <fmt/format.h>

#include <cstdio>
#include <iostream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <random>

#include "engine/checkpoint.h"
#include "engine/generator.h"
#include "engine/ops.h"
#include "tokenizer/tokenizer.h"
#include "tools/cli_util.h"
#include "tools/commands.h"
#include "tools/text_stream.h"

namespace dgpt::cli {
namespace {

struct GenerateArgs {
  std::string model_dir;
  std::optional<std::string> prompt;
  std::string prompt_ids;
  int max_tokens = 64;
  SamplingOptions sampling;
  std::optional<uint64_t> seed;
  std::vector<std::string> stop;
  bool ignore_eos = false;
  bool truncate = false;
  int threads = 0;
  bool json = false;
};

int RunGenerate(const GenerateArgs& args) {
  auto fail = [](const std::string& message) { return ReportError("generate", message); };
  const int threads = args.threads > 0 ? args.threads : DefaultThreadCount();
  SetBlasThreads(threads);
  ThreadPool pool(threads);

  auto model = Checkpoint::Load(args.model_dir);
  if (!model.ok()) return fail(model.status().message());
  auto tokenizer = LoadTokenizer(args.model_dir);
  if (!tokenizer.ok()) return fail(tokenizer.status().message());
  if ((*tokenizer)->vocab_size() > model.value()->config().vocab_size) {
    return fail(fmt::format("{}: the tokenizer has {} tokens but the model only {}", args.model_dir,
                            (*tokenizer)->vocab_size(), model.value()->config().vocab_size));
  }

  std::vector<TokenId> prompt;
  if (!args.prompt_ids.empty()) {
    auto ids = ParseTokenIds(args.prompt_ids);
    if (!ids.ok()) return fail(ids.status().message());
    prompt = *ids;
  } else {
    std::string text;
    if (args.prompt) {
      text = *args.prompt;
    } else {
      text.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
    }
    prompt = (*tokenizer)->Encode(text);
  }

  GenerationOptions options;
  options.max_tokens = args.max_tokens;
  options.sampling = args.sampling;
  options.sampling.seed = args.seed ? *args.seed : std::random_device{}();
  options.end_of_text = (*tokenizer)->eos_id();
  options.ignore_end_of_text = args.ignore_eos;
  options.truncate_prompt = args.truncate;

  TextStream text(**tokenizer, args.stop);
  auto on_token = [&, first = true](TokenId id) mutable {
    if (first) WarnIfRandomModel(args.model_dir);  // once the run is known to be going
    first = false;
    if (id >= (*tokenizer)->vocab_size()) return true;  // a model slot with no text
    const std::string chunk = text.Push(id);
    if (!args.json) {
      std::fwrite(chunk.data(), 1, chunk.size(), stdout);
      std::fflush(stdout);
    }
    return !text.stopped();
  };
  LocalBlockRunner blocks(*model.value(), pool, /*max_chunk_tokens=*/256);
  auto result = Generate(*model.value(), blocks, prompt, options, pool, on_token);
  if (!result.ok()) return fail(result.status().message());
  const std::string tail = text.Finish();
  const GenerationResult& r = *result;

  const double prompt_rate = r.prompt_ids.size() / std::max(r.prefill_seconds, 1e-9);
  const size_t decoded = r.generated_ids.empty() ? 0 : r.generated_ids.size() - 1;
  const double decode_rate = decoded / std::max(r.decode_seconds, 1e-9);
  if (args.json) {
    nlohmann::json out = {{"model", args.model_dir},
                          {"prompt_ids", r.prompt_ids},
                          {"generated_ids", r.generated_ids},
                          {"text", text.text() + tail},
                          {"stop_reason", text.stopped() ? "stop" : StopReasonName(r.stop_reason)},
                          {"seed", options.sampling.seed},
                          {"threads", threads},
                          {"timings",
                           {{"prompt_tokens", r.prompt_ids.size()},
                            {"prefill_seconds", r.prefill_seconds},
                            {"prompt_tokens_per_second", prompt_rate},
                            {"first_token_seconds", r.first_token_seconds},
                            {"generated_tokens", r.generated_ids.size()},
                            {"decode_seconds", r.decode_seconds},
                            {"decode_tokens_per_second", decode_rate}}}};
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
               static_cast<unsigned long long>(options.sampling.seed), threads);
  return 0;
}

}  // namespace

void AddGenerateCommand(CLI::App& app, CommandRunner* runner) {
  auto args = std::make_shared<GenerateArgs>();
  CLI::App* cmd = app.add_subcommand("generate", "Generate text from a prompt");
  cmd->add_option("--model,-m", args->model_dir,
                  "Model folder (config.json, model.safetensors, "
                  "tokenizer files)")
      ->required();
  cmd->add_option("--prompt,-p", args->prompt, "Prompt text (default: read stdin)");
  cmd->add_option("--prompt-ids", args->prompt_ids,
                  "Prompt as token ids, e.g. 464,2068 (instead of text)");
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
  cmd->callback([args, runner] { *runner = [args] { return RunGenerate(*args); }; });
}

}  // namespace dgpt::cli
