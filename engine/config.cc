#include "engine/config.h"

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

namespace dgpt {
namespace {

// Reads an integer field; GPT-2 configs sometimes also spell n_positions as n_ctx.
Result<int> ReadPositiveInt(const nlohmann::json& json, const char* key,
                            const std::string& source) {
  auto it = json.find(key);
  if (it == json.end()) return Status::Error(source + ": missing \"" + key + "\"");
  if (!it->is_number_integer() || it->get<int64_t>() <= 0 || it->get<int64_t>() > (1 << 30)) {
    return Status::Error(source + ": \"" + key + "\" must be a positive integer, got " +
                         it->dump());
  }
  return static_cast<int>(it->get<int64_t>());
}

}  // namespace

Status ModelConfig::Validate(const std::string& source) const {
  if (n_embd % n_head != 0) {
    return Status::Error(source + ": n_embd (" + std::to_string(n_embd) +
                         ") is not divisible by n_head (" + std::to_string(n_head) + ")");
  }
  if (!(layer_norm_epsilon > 0.0f && layer_norm_epsilon < 1.0f)) {
    return Status::Error(source + ": layer_norm_epsilon must be in (0, 1)");
  }
  return Status::Ok();
}

Result<ModelConfig> ModelConfig::FromJson(const nlohmann::json& json, const std::string& source) {
  if (!json.is_object()) return Status::Error(source + ": expected a JSON object");
  ModelConfig config;
  struct Field {
    const char* key;
    int* target;
  };
  for (Field field : {Field{"n_layer", &config.n_layer}, Field{"n_head", &config.n_head},
                      Field{"n_embd", &config.n_embd}, Field{"vocab_size", &config.vocab_size}}) {
    auto value = ReadPositiveInt(json, field.key, source);
    if (!value.ok()) return value.status();
    *field.target = *value;
  }
  auto positions =
      ReadPositiveInt(json, json.contains("n_positions") ? "n_positions" : "n_ctx", source);
  if (!positions.ok()) return positions.status();
  config.n_positions = *positions;

  if (auto it = json.find("layer_norm_epsilon"); it != json.end()) {
    if (!it->is_number()) return Status::Error(source + ": layer_norm_epsilon must be a number");
    config.layer_norm_epsilon = it->get<float>();
  }
  if (auto it = json.find("activation_function"); it != json.end()) {
    const std::string name = it->is_string() ? it->get<std::string>() : it->dump();
    if (name == "gelu_new" || name == "gelu_pytorch_tanh" || name == "gelu_fast") {
      config.activation = Activation::kGeluTanh;
    } else if (name == "gelu") {
      config.activation = Activation::kGeluErf;
    } else {
      return Status::Error(source + ": unsupported activation_function \"" + name +
                           "\" (supported: gelu_new, gelu_pytorch_tanh, gelu)");
    }
  }
  DGPT_RETURN_IF_ERROR(config.Validate(source));
  return config;
}

Result<ModelConfig> ModelConfig::Load(const std::string& path) {
  std::ifstream in(path);
  if (!in) return Status::Error(path + ": cannot open (is this a model folder?)");
  std::stringstream text;
  text << in.rdbuf();
  nlohmann::json json = nlohmann::json::parse(text.str(), nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded()) return Status::Error(path + ": not valid JSON");
  return FromJson(json, path);
}

nlohmann::json ModelConfig::ToJson() const {
  return {{"model_type", "gpt2"},
          {"n_layer", n_layer},
          {"n_head", n_head},
          {"n_embd", n_embd},
          {"n_positions", n_positions},
          {"n_ctx", n_positions},
          {"vocab_size", vocab_size},
          {"layer_norm_epsilon", layer_norm_epsilon},
          {"activation_function", activation == Activation::kGeluTanh ? "gelu_new" : "gelu"}};
}

}  // namespace dgpt
