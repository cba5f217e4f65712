// dgpt perplexity: how well a model predicts a text file. The file is tokenized and evaluated in
// windows of the context length that overlap by context - stride tokens (Hugging Face's
// "perplexity of fixed-length models"): each window scores only the tokens the previous window
// did not, so every scored token after the first window has at least context - stride tokens of
// context instead of restarting from nothing.
#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <exception>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "engine/checkpoint.h"
#include "engine/generator.h"
#include "engine/ops.h"
#include "engine/thread_pool.h"
#include "engine/transformer.h"
#include "tokenizer/tokenizer.h"
#include "tools/cli_util.h"
#include "tools/commands.h"

namespace dgpt::cli {
namespace {

// Rows per forward chunk (LocalBlockRunner): bounds the Workspace (~10 C floats per row) for long
// contexts.
constexpr int kPrefillChunk = 256;
// Rows per LM-head call: the head ([V, C], the largest matrix of a small GPT) is read once per
// batch of rows (as a prefill sgemm) instead of once per row; bounds the logits to
// kHeadBatch * V floats.
constexpr int kHeadBatch = 128;

struct PerplexityArgs {
  std::string model_dir;
  std::string file;
  std::optional<int> context;  // default: the model's n_positions
  std::optional<int> stride;   // default: context / 2
  int max_tokens = 0;          // 0: the whole file
  int threads = 0;
  bool json = false;
  WeightFormatArgs formats;
};

int Fail(const std::string& message) {
  return ReportError("perplexity", message);
}

Result<std::string> ReadFile(const std::string& path) {
  std::FILE* file = std::fopen(path.c_str(), "rb");
  if (!file) return Status::Error(fmt::format("{}: cannot open: {}", path, std::strerror(errno)));
  std::string contents;
  char buffer[1 << 16];
  size_t count = 0;
  while ((count = std::fread(buffer, 1, sizeof(buffer), file)) > 0) contents.append(buffer, count);
  const bool failed = std::ferror(file);
  const int error = errno;  // e.g. EISDIR: fopen succeeds on a directory, fread does not
  std::fclose(file);
  if (failed) return Status::Error(fmt::format("{}: cannot read: {}", path, std::strerror(error)));
  return contents;
}

// One window: the model sees tokens [begin, end - 1) at positions 0 .. and predicts tokens
// [first_target, end), each from the logits of the position before it.
struct Window {
  int begin;
  int end;
  int first_target;
};

// Hugging Face's loop: windows start every `stride` tokens until one ends at the last token. A
// token is scored by the first window that contains it, if that window has a token before it:
// with stride < context every token but the first is scored once; with stride == context the
// first token of each window has no context and is not scored (as in HF).
std::vector<Window> PlanWindows(int n, int context, int stride) {
  std::vector<Window> windows;
  int previous_end = 0;
  for (int begin = 0;; begin += stride) {
    const int end = std::min(begin + context, n);
    const int first_target = std::max(previous_end, begin + 1);
    if (first_target < end) windows.push_back({begin, end, first_target});
    previous_end = end;
    if (end == n) break;
  }
  return windows;
}

// -log softmax(logits)[target], in float64 over the whole vocabulary.
double NegativeLogLikelihood(const float* logits, int V, TokenId target) {
  double max = logits[0];
  for (int v = 1; v < V; ++v) max = std::max(max, static_cast<double>(logits[v]));
  double sum = 0;
  for (int v = 0; v < V; ++v) sum += std::exp(static_cast<double>(logits[v]) - max);
  return -(static_cast<double>(logits[target]) - max - std::log(sum));
}

struct Totals {
  double nll = 0;  // summed over scored tokens, nats
  int64_t scored = 0;
  int64_t forwarded = 0;  // tokens run through the blocks (scored ones plus their context)
};

// Scratch reused across windows.
struct Evaluator {
  Evaluator(const Checkpoint& m, ThreadPool& p, int context)
      : model(m),
        pool(p),
        blocks(m, p, std::min(context, kPrefillChunk)),
        x(static_cast<size_t>(context) * m.config().n_embd),
        normed(static_cast<size_t>(kHeadBatch) * m.config().n_embd),
        logits(static_cast<size_t>(kHeadBatch) * m.config().vocab_size),
        row_nll(kHeadBatch) {}

  Status Run(std::span<const TokenId> ids, const Window& w, Totals& totals) {
    const ModelConfig& cfg = model.config();
    const int C = cfg.n_embd, V = cfg.vocab_size;
    const int T = w.end - 1 - w.begin;  // the last token is only a target
    // Each window is an independent sequence at positions 0 .. T-1 (fresh cache).
    EmbedTokens(x.data(), model, ids.subspan(w.begin, T), 0);
    DGPT_RETURN_IF_ERROR(blocks.Begin(T));
    DGPT_RETURN_IF_ERROR(blocks.Forward(x.data(), T, /*all_rows=*/true));
    blocks.End();
    totals.forwarded += T;

    // Row r of x predicts token begin + r + 1; only the rows of this window's targets count.
    for (int r = w.first_target - 1 - w.begin; r < T; r += kHeadBatch) {
      const int B = std::min(kHeadBatch, T - r);
      // ComputeLogits for B rows at once: ln_f, then the head as one [B, C] x [C, V] product.
      layernorm_forward(normed.data(), x.data() + static_cast<size_t>(r) * C,
                        model.final_norm_weight(), model.final_norm_bias(), B, C,
                        cfg.layer_norm_epsilon);
      matmul_forward(logits.data(), normed.data(), model.lm_head(), nullptr, B, pool);
      pool.ParallelFor(B, 1, [&](int64_t b0, int64_t b1) {
        for (int64_t b = b0; b < b1; ++b) {
          const TokenId target = ids[w.begin + r + b + 1];
          row_nll[b] = NegativeLogLikelihood(logits.data() + b * V, V, target);
        }
      });
      // Summed in token order, so the total does not depend on the thread count.
      for (int b = 0; b < B; ++b) totals.nll += row_nll[b];
      totals.scored += B;
    }
    return Status::Ok();
  }

  const Checkpoint& model;
  ThreadPool& pool;
  LocalBlockRunner blocks;
  std::vector<float> x;       // [context, C]
  std::vector<float> normed;  // [kHeadBatch, C]
  std::vector<float> logits;  // [kHeadBatch, V]
  std::vector<double> row_nll;
};

int RunPerplexity(const PerplexityArgs& args) {
  if (args.context && *args.context < 2) {
    return Fail(
        fmt::format("--context {} is too short: a window needs at least 2 tokens", *args.context));
  }
  if (args.stride && *args.stride < 1) {
    return Fail(fmt::format("--stride {} must be at least 1", *args.stride));
  }
  if (args.max_tokens < 0) {
    return Fail(fmt::format("--max-tokens {} must be >= 0 (0: the whole file)", args.max_tokens));
  }
  if (args.threads < 0) return Fail(fmt::format("--threads {} must be >= 0", args.threads));

  LoadOptions load;  // everything: embeddings, every block, the head
  if (Status status = ApplyWeightFormats(args.formats, &load); !status.ok()) {
    return Fail(status.message());
  }

  auto text = ReadFile(args.file);
  if (!text.ok()) return Fail(text.status().message());
  auto tokenizer = LoadTokenizer(args.model_dir);
  if (!tokenizer.ok()) return Fail(tokenizer.status().message());
  auto loaded = Checkpoint::Load(args.model_dir, load);
  if (!loaded.ok()) return Fail(loaded.status().message());
  const Checkpoint& model = **loaded;
  const ModelConfig& cfg = model.config();
  if ((*tokenizer)->vocab_size() > cfg.vocab_size) {
    return Fail(fmt::format("{}: the tokenizer has {} tokens but the model only {}", args.model_dir,
                            (*tokenizer)->vocab_size(), cfg.vocab_size));
  }

  const int context = args.context.value_or(cfg.n_positions);
  if (context > cfg.n_positions) {
    return Fail(fmt::format("--context {} exceeds the model's context of {} tokens (n_positions)",
                            context, cfg.n_positions));
  }
  const int stride = args.stride.value_or(std::max(1, context / 2));
  if (stride > context) {
    return Fail(fmt::format("--stride {} exceeds the context of {} tokens", stride, context));
  }

  std::vector<TokenId> ids = (*tokenizer)->Encode(*text);
  const size_t file_tokens = ids.size();
  if (args.max_tokens > 0 && ids.size() > static_cast<size_t>(args.max_tokens)) {
    ids.resize(args.max_tokens);
  }
  if (ids.size() < 2) {
    return Fail(fmt::format("{}: {} token{}{}; perplexity needs at least 2", args.file, ids.size(),
                            ids.size() == 1 ? "" : "s",
                            ids.size() < file_tokens ? " after --max-tokens" : ""));
  }
  if (ids.size() > static_cast<size_t>(INT32_MAX)) return Fail(args.file + ": too many tokens");
  const int n = static_cast<int>(ids.size());

  const int threads = args.threads > 0 ? args.threads : DefaultThreadCount();
  SetBlasThreads(threads);
  ThreadPool pool(threads);
  WarnIfRandomModel(args.model_dir);

  const std::vector<Window> windows = PlanWindows(n, context, stride);
  const auto start = std::chrono::steady_clock::now();
  Evaluator evaluator(model, pool, context);
  Totals totals;
  for (const Window& window : windows) {
    if (Status status = evaluator.Run(ids, window, totals); !status.ok()) {
      return Fail(status.message());
    }
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  const double mean_nll = totals.nll / static_cast<double>(totals.scored);
  const double perplexity = std::exp(mean_nll);
  const double rate = totals.scored / std::max(seconds, 1e-9);
  if (args.json) {
    const nlohmann::json out = {{"model", args.model_dir},
                                {"file", args.file},
                                {"file_tokens", file_tokens},
                                {"tokens", n},
                                {"tokens_scored", totals.scored},
                                {"tokens_forwarded", totals.forwarded},
                                {"context", context},
                                {"stride", stride},
                                {"windows", windows.size()},
                                {"mean_nll", mean_nll},
                                {"perplexity", perplexity},
                                {"seconds", seconds},
                                {"tokens_per_second", rate},
                                {"threads", threads},
                                {"dtype", WeightFormatName(model.weight_format())},
                                {"head_dtype", WeightFormatName(model.lm_head().format)}};
    std::cout << out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << std::endl;
    return 0;
  }
  fmt::print("tokens:     {} scored of {}{} (context {}, stride {}, {} window{})\n", totals.scored,
             n, static_cast<size_t>(n) < file_tokens ? fmt::format(" (file: {})", file_tokens) : "",
             context, stride, windows.size(), windows.size() == 1 ? "" : "s");
  fmt::print("mean NLL:   {:.6f} nats/token\n", mean_nll);
  fmt::print("perplexity: {:.4f}\n", perplexity);
  fmt::print(
      "time:       {:.2f} s, {:.1f} tokens/s ({} tokens forwarded, {} thread{}, {} weights, "
      "{} head)\n",
      seconds, rate, totals.forwarded, threads, threads == 1 ? "" : "s",
      WeightFormatName(model.weight_format()), WeightFormatName(model.lm_head().format));
  std::fflush(stdout);
  return 0;
}

}  // namespace

void AddPerplexityCommand(CLI::App& app, CommandRunner* runner) {
  auto args = std::make_shared<PerplexityArgs>();
  CLI::App* cmd = app.add_subcommand("perplexity", "Perplexity of a model on a text file");
  cmd->add_option("--model,-m", args->model_dir,
                  "Model folder (config.json, model.safetensors, tokenizer files)")
      ->required();
  cmd->add_option("file", args->file, "Text file to evaluate")->required();
  cmd->add_option("--context", args->context, "Tokens per window (default: the model's context)");
  cmd->add_option("--stride", args->stride,
                  "Tokens between window starts; each window scores only tokens the previous one "
                  "did not (default: context / 2)");
  cmd->add_option("--max-tokens", args->max_tokens,
                  "Evaluate only the first N tokens of the file (0: all)")
      ->capture_default_str();
  cmd->add_option("--threads", args->threads, "Threads (default: all cores)");
  cmd->add_flag("--json", args->json, "Print one JSON object");
  AddWeightFormatOptions(cmd, &args->formats, /*with_head=*/true);
  cmd->callback([args, runner] {
    *runner = [args] {
      // Nothing may escape main: a failure is exit status 1 and one line.
      try {
        return RunPerplexity(*args);
      } catch (const std::exception& e) {
        return Fail(e.what());
      }
    };
  });
}

}  // namespace dgpt::cli
