// dgpt inspect: what a checkpoint holds, and how much memory each part of it needs.
#include <fmt/format.h>

#include <iostream>
#include <nlohmann/json.hpp>

#include "engine/checkpoint.h"
#include "tools/cli_util.h"
#include "tools/commands.h"

namespace dgpt::cli {
namespace {

struct PartSize {
  uint64_t parameters = 0;
  uint64_t bytes = 0;
  void Add(const TensorInfo& info) {
    // A packed q8_0 matrix is U8 [rows, cols / 32, 34]: rows * cols weights.
    parameters += IsPackedQ8Tensor(info)
                      ? static_cast<uint64_t>(info.shape[0] * info.shape[1] * kQ8BlockSize)
                      : static_cast<uint64_t>(info.num_elements());
    bytes += info.num_bytes();
  }
};

// "F32", "F16", "BF16", or "Q8_0" for packed q8_0 weights.
std::string WeightDTypeName(const Checkpoint& model) {
  return model.weight_dtype() == DType::kU8 ? "Q8_0" : std::string(DTypeName(model.weight_dtype()));
}

int RunInspect(const std::string& dir, bool json) {
  // Validates the whole checkpoint against its config but maps no layer.
  auto model =
      Checkpoint::Load(dir, LoadOptions{.layers = {0, 0}, .embeddings = false, .head = false});
  if (!model.ok()) return ReportError("inspect", model.status().message());
  const ModelConfig& cfg = model.value()->config();
  const SafetensorsFile& file = model.value()->file();

  PartSize embeddings, head, total, ignored;
  std::vector<PartSize> layers(cfg.n_layer);
  const std::string& prefix = model.value()->tensor_prefix();
  for (const TensorInfo& info : file.tensors()) {
    std::string_view name = info.name;
    if (name.starts_with(prefix)) name.remove_prefix(prefix.size());
    int layer = -1;
    if (name.starts_with("h.")) layer = std::atoi(std::string(name.substr(2)).c_str());
    if (name.ends_with(".attn.bias") || name.ends_with(".attn.masked_bias")) {
      ignored.Add(info);  // causal-mask buffers; the engine builds the mask itself
      continue;
    }
    if (layer >= 0) {
      layers[layer].Add(info);
    } else if (name.starts_with("wte") || name.starts_with("wpe")) {
      embeddings.Add(info);
    } else {
      head.Add(info);
    }
    total.Add(info);
  }
  const bool tied = file.Find("lm_head.weight") == nullptr;
  // A shard (from `dgpt split`) holds only some layers; size a layer by the first it holds.
  const LayerRange held = model.value()->held_layers();
  const std::optional<ShardInfo>& shard = model.value()->shard();
  const PartSize& per_layer = held.size() == 0 ? PartSize{} : layers[held.begin];

  if (json) {
    nlohmann::json out = {{"model", dir},
                          {"config", cfg.ToJson()},
                          {"parameters", total.parameters},
                          {"bytes", total.bytes},
                          {"dtype", WeightDTypeName(*model.value())},
                          {"embedding_bytes", embeddings.bytes},
                          {"head_bytes", head.bytes},
                          {"lm_head_tied", tied},
                          {"bytes_per_layer", per_layer.bytes},
                          {"parameters_per_layer", per_layer.parameters}};
    if (shard) {
      out["shard"] = {{"layers", {held.begin, held.end}},
                      {"has_embeddings", shard->has_embeddings},
                      {"has_head", shard->has_head},
                      {"fingerprint", shard->fingerprint},
                      {"source", shard->source}};
    }
    std::cout << out.dump(2) << std::endl;
    return 0;
  }
  fmt::print("model:        {}\n", dir);
  fmt::print(
      "config:       n_layer {}, n_head {}, n_embd {}, n_positions {}, vocab_size {}, "
      "layer_norm_epsilon {:g}, {}\n",
      cfg.n_layer, cfg.n_head, cfg.n_embd, cfg.n_positions, cfg.vocab_size, cfg.layer_norm_epsilon,
      cfg.activation == Activation::kGeluTanh ? "gelu_new" : "gelu");
  fmt::print("parameters:   {} ({:.1f} M)\n", total.parameters, total.parameters / 1e6);
  fmt::print("dtype:        {}\n", WeightDTypeName(*model.value()));
  if (shard) {
    fmt::print("shard:        layers {}:{}{}{}, fingerprint {}\n", held.begin, held.end,
               shard->has_embeddings ? ", embeddings" : "", shard->has_head ? ", head" : "",
               shard->fingerprint.empty() ? "(none recorded)" : shard->fingerprint);
  }
  if (model.value()->holds_embeddings()) {
    fmt::print("embeddings:   {} (wte + wpe)\n", HumanBytes(embeddings.bytes));
  }
  if (held.size() > 0) {
    fmt::print("per layer:    {} ({} parameters) x {} layers = {}\n", HumanBytes(per_layer.bytes),
               per_layer.parameters, held.size(), HumanBytes(per_layer.bytes * held.size()));
  }
  if (model.value()->holds_head()) {
    fmt::print("head:         {}{}\n", HumanBytes(head.bytes),
               tied ? " (ln_f; lm_head tied to wte)" : " (ln_f + lm_head)");
  }
  if (ignored.bytes)
    fmt::print("ignored:      {} (attention mask buffers)\n", HumanBytes(ignored.bytes));
  fmt::print("total:        {}\n", HumanBytes(total.bytes));
  return 0;
}

}  // namespace

void AddInspectCommand(CLI::App& app, CommandRunner* runner) {
  auto dir = std::make_shared<std::string>();
  auto json = std::make_shared<bool>(false);
  CLI::App* cmd = app.add_subcommand("inspect", "Show a checkpoint's config, size and layout");
  cmd->add_option("model", *dir, "Model folder")->required();
  cmd->add_flag("--json", *json, "Print JSON");
  cmd->callback([=] { *runner = [=] { return RunInspect(*dir, *json); }; });
}

}  // namespace dgpt::cli
