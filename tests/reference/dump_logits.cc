// Test tool: runs the engine over given token ids and writes the logits of every position as
// raw little-endian float32 [T, V], for tests/reference/check_engine.py to compare against the
// independent numpy implementation.
//   --mode prefill   one forward pass over all T tokens
//   --mode decode    one token at a time through the KV cache
//   --mode split:K   prefill the first K tokens, then decode the rest one at a time
#include <fmt/format.h>
#include <CLI/CLI.hpp>
#include <cstdio>
#include <sstream>

#include "engine/checkpoint.h"
#include "engine/generator.h"
#include "engine/ops.h"

using namespace dgpt;

int main(int argc, char** argv) {
  CLI::App app{"Dump the engine's logits for reference checks"};
  std::string model_dir, ids_text, mode = "prefill", out_path;
  int threads = 1;
  std::string dtype;  // compute format (engine/kernels/kernels.h); "" = as stored
  app.add_option("--model", model_dir)->required();
  app.add_option("--ids", ids_text)->required();
  app.add_option("--mode", mode);
  app.add_option("--out", out_path)->required();
  app.add_option("--threads", threads);
  app.add_option("--dtype", dtype);
  CLI11_PARSE(app, argc, argv);

  std::vector<TokenId> ids;
  std::stringstream stream(ids_text);
  for (std::string item; std::getline(stream, item, ',');) ids.push_back(std::stoi(item));
  const int T = static_cast<int>(ids.size());
  int prefill_tokens = T;
  if (mode == "decode") {
    prefill_tokens = 0;
  } else if (mode.starts_with("split:")) {
    prefill_tokens = std::stoi(mode.substr(6));
  } else if (mode != "prefill") {
    fmt::print(stderr, "dump_logits: unknown mode {}\n", mode);
    return 2;
  }

  LoadOptions load;
  if (!dtype.empty()) {
    WeightFormat format;
    if (!ParseWeightFormat(dtype, &format)) {
      fmt::print(stderr, "dump_logits: unknown --dtype {}\n", dtype);
      return 2;
    }
    load.weight_format = format;
  }
  auto model = Checkpoint::Load(model_dir, load);
  if (!model.ok()) {
    fmt::print(stderr, "dump_logits: {}\n", model.status().message());
    return 1;
  }
  const ModelConfig& cfg = model.value()->config();
  const int C = cfg.n_embd, V = cfg.vocab_size;
  SetBlasThreads(threads);
  ThreadPool pool(threads);
  LocalBlockRunner blocks(*model.value(), pool, std::max(T, 1));
  if (Status s = blocks.Begin(T); !s.ok()) return 1;

  std::vector<float> x(static_cast<size_t>(T) * C), logits(static_cast<size_t>(T) * V), normed(C);
  EmbedTokens(x.data(), *model.value(), ids, 0);
  auto forward = [&](int first, int count) {
    Status s = blocks.Forward(x.data() + static_cast<size_t>(first) * C, count, true);
    if (!s.ok()) {
      fmt::print(stderr, "dump_logits: {}\n", s.message());
      std::exit(1);
    }
  };
  if (prefill_tokens > 0) forward(0, prefill_tokens);
  for (int t = prefill_tokens; t < T; ++t) forward(t, 1);
  for (int t = 0; t < T; ++t) {
    ComputeLogits(logits.data() + static_cast<size_t>(t) * V, x.data() + static_cast<size_t>(t) * C,
                  *model.value(), normed.data(), pool);
  }
  std::FILE* out = std::fopen(out_path.c_str(), "wb");
  if (!out || std::fwrite(logits.data(), sizeof(float), logits.size(), out) != logits.size()) {
    fmt::print(stderr, "dump_logits: cannot write {}\n", out_path);
    return 1;
  }
  std::fclose(out);
  return 0;
}
