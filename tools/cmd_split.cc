// dgpt split: cut a full checkpoint into one folder per pipeline stage plus a coordinator folder
// (layout in engine/shard.h), so each machine stores and reads only its own layers.
#include <fmt/format.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>

#include "engine/config.h"
#include "engine/shard.h"
#include "tools/cli_util.h"
#include "tools/commands.h"

namespace dgpt::cli {
namespace {

struct SplitArgs {
  std::string model_dir;
  std::string stages;
  std::string out_dir;
  std::string dtype = "keep";
};

// "keep" -> nullopt (the source's bytes as they are).
Result<ShardFormat> ParseTargetFormat(const std::string& name) {
  if (name == "keep") return ShardFormat{};
  if (name == "f32") return ShardFormat{DType::kF32};
  if (name == "f16") return ShardFormat{DType::kF16};
  if (name == "bf16") return ShardFormat{DType::kBF16};
  if (name == "q8_0") return ShardFormat{.dtype = std::nullopt, .q8_0 = true};
  return Status::Error("--dtype \"" + name + "\" is not one of keep, f32, f16, bf16, q8_0");
}

// The summary table, from the manifest just written (so it shows exactly what is on disk).
void PrintSummary(const std::string& out_dir) {
  std::ifstream in(out_dir + "/manifest.json");
  const nlohmann::json manifest = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (!manifest.is_object()) return;
  fmt::print("{:<12} {:<8} {:>10}  {}\n", "stage", "layers", "size", "fingerprint");
  for (const nlohmann::json& stage : manifest.value("stages", nlohmann::json::array())) {
    const nlohmann::json layers = stage.value("layers", nlohmann::json::array({0, 0}));
    fmt::print("{:<12} {:<8} {:>10}  {}...\n", stage.value("dir", "?"),
               fmt::format("{}:{}", layers[0].get<int>(), layers[1].get<int>()),
               HumanBytes(stage.value("bytes", uint64_t{0})),
               stage.value("fingerprint", std::string()).substr(0, 16));
  }
  const nlohmann::json coordinator = manifest.value("coordinator", nlohmann::json::object());
  fmt::print("{:<12} {:<8} {:>10}  (embeddings, head, tokenizer)\n", "coordinator", "-",
             HumanBytes(coordinator.value("bytes", uint64_t{0})));
  fmt::print("wrote {}/manifest.json\n", out_dir);
}

int RunSplit(const SplitArgs& args) {
  auto fail = [](const std::string& message) { return ReportError("split", message); };
  auto format = ParseTargetFormat(args.dtype);
  if (!format.ok()) return fail(format.status().message());
  auto config = ModelConfig::Load(args.model_dir + "/config.json");
  if (!config.ok()) return fail(config.status().message());
  auto stages = ParseStages(args.stages, config->n_layer);
  if (!stages.ok()) return fail(stages.status().message());
  Status written = WriteShards(args.model_dir, *stages, args.out_dir, *format);
  if (!written.ok()) return fail(written.message());
  PrintSummary(args.out_dir);
  return 0;
}

}  // namespace

void AddSplitCommand(CLI::App& app, CommandRunner* runner) {
  auto args = std::make_shared<SplitArgs>();
  CLI::App* cmd = app.add_subcommand(
      "split", "Write one folder per pipeline stage (+ a coordinator folder) from a checkpoint");
  cmd->add_option("--model", args->model_dir, "Full checkpoint folder")->required();
  cmd->add_option("--stages", args->stages,
                  "Layers per stage: BEGIN:END,... covering every layer (e.g. 0:4,4:8,8:12), "
                  "or auto:N for N even stages")
      ->required();
  cmd->add_option("--out", args->out_dir, "Output folder (stage-K/, coordinator/, manifest.json)")
      ->required();
  cmd->add_option("--dtype", args->dtype,
                  "Weight dtype of the shards: keep (default), f32, f16 or bf16 (rounded to "
                  "nearest even), or q8_0 (weight matrices in blocks of 32 int8 with one scale)");
  cmd->callback([=] { *runner = [=] { return RunSplit(*args); }; });
}

}  // namespace dgpt::cli
