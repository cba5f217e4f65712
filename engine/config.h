// The model hyper-parameters, read from a Hugging Face GPT-2 config.json.
#pragma once

#include <cstdint>
#include <string>

#include <nlohmann/json_fwd.hpp>

#include "base/status.h"

namespace dgpt {

enum class Activation { kGeluTanh, kGeluErf };

struct ModelConfig {
  int n_layer = 0;
  int n_head = 0;
  int n_embd = 0;       // C
  int n_positions = 0;  // context length
  int vocab_size = 0;   // V
  float layer_norm_epsilon = 1e-5f;
  Activation activation = Activation::kGeluTanh;  // GPT-2's "gelu_new"

  int head_dim() const { return n_embd / n_head; }

  // Checks ranges and divisibility; `source` names the file in the message.
  Status Validate(const std::string& source) const;
  // Parses the fields GPT-2 uses; missing or mistyped fields are errors naming `source`.
  static Result<ModelConfig> FromJson(const nlohmann::json& json, const std::string& source);
  static Result<ModelConfig> Load(const std::string& config_json_path);
  nlohmann::json ToJson() const;
};

}  // namespace dgpt
