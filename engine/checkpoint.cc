#include "engine/checkpoint.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <bit>
#include <cmath>
#include <cstring>

namespace dgpt {

float HalfToFloat(uint16_t bits) {
  const uint32_t sign = static_cast<uint32_t>(bits & 0x8000) << 16;
  const uint32_t exponent = (bits >> 10) & 0x1f;
  const uint32_t mantissa = bits & 0x3ff;
  if (exponent == 0) {  // zero or subnormal: mantissa * 2^-24
    const float magnitude = std::ldexp(static_cast<float>(mantissa), -24);
    return sign ? -magnitude : magnitude;
  }
  if (exponent == 31) {  // inf or NaN
    return std::bit_cast<float>(sign | 0x7f800000u | (mantissa << 13));
  }
  return std::bit_cast<float>(sign | ((exponent + 112) << 23) | (mantissa << 13));
}

float BFloat16ToFloat(uint16_t bits) {
  return std::bit_cast<float>(static_cast<uint32_t>(bits) << 16);
}

namespace {

std::string ShapeString(const std::vector<int64_t>& shape) {
  return fmt::format("[{}]", fmt::join(shape, ", "));
}

bool IsFloatDType(DType dtype) {
  return dtype == DType::kF32 || dtype == DType::kF16 || dtype == DType::kBF16;
}

struct ExpectedTensor {
  std::string name;  // without prefix
  std::vector<int64_t> shape;
};

// Every tensor GPT2LMHeadModel's transformer holds, with the shape the config implies.
std::vector<ExpectedTensor> ExpectedTensors(const ModelConfig& config) {
  const int64_t C = config.n_embd, V = config.vocab_size, P = config.n_positions;
  std::vector<ExpectedTensor> expected = {{"wte.weight", {V, C}}, {"wpe.weight", {P, C}}};
  for (int i = 0; i < config.n_layer; ++i) {
    const std::string h = fmt::format("h.{}.", i);
    expected.push_back({h + "ln_1.weight", {C}});
    expected.push_back({h + "ln_1.bias", {C}});
    expected.push_back({h + "attn.c_attn.weight", {C, 3 * C}});
    expected.push_back({h + "attn.c_attn.bias", {3 * C}});
    expected.push_back({h + "attn.c_proj.weight", {C, C}});
    expected.push_back({h + "attn.c_proj.bias", {C}});
    expected.push_back({h + "ln_2.weight", {C}});
    expected.push_back({h + "ln_2.bias", {C}});
    expected.push_back({h + "mlp.c_fc.weight", {C, 4 * C}});
    expected.push_back({h + "mlp.c_fc.bias", {4 * C}});
    expected.push_back({h + "mlp.c_proj.weight", {4 * C, C}});
    expected.push_back({h + "mlp.c_proj.bias", {C}});
  }
  expected.push_back({"ln_f.weight", {C}});
  expected.push_back({"ln_f.bias", {C}});
  return expected;
}

// A block index in a name like "transformer.h.12.attn...", or -1.
int BlockIndexOf(std::string_view name, std::string_view prefix) {
  if (!name.starts_with(prefix)) return -1;
  name.remove_prefix(prefix.size());
  if (!name.starts_with("h.")) return -1;
  name.remove_prefix(2);
  int index = 0;
  size_t digits = 0;
  while (digits < name.size() && name[digits] >= '0' && name[digits] <= '9' && digits < 9) {
    index = index * 10 + (name[digits] - '0');
    ++digits;
  }
  return digits > 0 && digits < name.size() && name[digits] == '.' ? index : -1;
}

}  // namespace

Result<std::unique_ptr<Checkpoint>> Checkpoint::Load(const std::string& dir,
                                                     const LoadOptions& options) {
  auto checkpoint = std::unique_ptr<Checkpoint>(new Checkpoint());
  checkpoint->dir_ = dir;
  auto config = ModelConfig::Load(dir + "/config.json");
  if (!config.ok()) return config.status();
  checkpoint->config_ = *config;

  const std::string path = dir + "/model.safetensors";
  auto file = SafetensorsFile::Open(path);
  if (!file.ok()) return file.status();
  checkpoint->file_ = std::move(file).value();
  const SafetensorsFile& st = *checkpoint->file_;

  if (st.Find("transformer.wte.weight")) {
    checkpoint->prefix_ = "transformer.";
  } else if (!st.Find("wte.weight")) {
    return Status::Error(path + ": missing tensor wte.weight (nor transformer.wte.weight); " +
                         "is this a GPT-2 checkpoint?");
  }
  const std::string& prefix = checkpoint->prefix_;

  // Check the whole model against the config, not only the parts this process maps, so a
  // mismatched checkpoint fails the same way on every node.
  const ModelConfig& cfg = checkpoint->config_;
  auto check_tensor = [&](const std::string& name, const std::vector<int64_t>& shape) -> Status {
    const TensorInfo* info = st.Find(name);
    if (!info) return Status::Error(path + ": missing tensor " + name);
    if (!IsFloatDType(info->dtype)) {
      return Status::Error(
          fmt::format("{}: tensor {} has dtype {}; weights must be F32, F16 or BF16", path, name,
                      DTypeName(info->dtype)));
    }
    if (info->shape != shape) {
      return Status::Error(fmt::format(
          "{}: tensor {} has shape {} but config.json (n_layer {}, n_head {}, n_embd {}, "
          "n_positions {}, vocab_size {}) implies {}",
          path, name, ShapeString(info->shape), cfg.n_layer, cfg.n_head, cfg.n_embd,
          cfg.n_positions, cfg.vocab_size, ShapeString(shape)));
    }
    return Status::Ok();
  };
  for (const ExpectedTensor& tensor : ExpectedTensors(cfg)) {
    DGPT_RETURN_IF_ERROR(check_tensor(prefix + tensor.name, tensor.shape));
  }
  const bool has_lm_head = st.Find("lm_head.weight") != nullptr;
  if (has_lm_head) {
    DGPT_RETURN_IF_ERROR(check_tensor("lm_head.weight", {cfg.vocab_size, cfg.n_embd}));
  }
  for (const TensorInfo& info : st.tensors()) {
    const int block = BlockIndexOf(info.name, prefix);
    if (block >= cfg.n_layer) {
      return Status::Error(
          fmt::format("{}: tensor {} belongs to block {} but config.json has "
                      "n_layer {}",
                      path, info.name, block, cfg.n_layer));
    }
  }
  checkpoint->weight_dtype_ = st.Find(prefix + "wte.weight")->dtype;

  LayerRange layers = options.layers;
  if (layers.end < 0) layers.end = cfg.n_layer;
  if (layers.begin < 0 || layers.begin > layers.end || layers.end > cfg.n_layer) {
    return Status::Error(fmt::format("{}: layer range {}:{} is outside the model's {} layers", dir,
                                     layers.begin, layers.end, cfg.n_layer));
  }
  checkpoint->layers_ = layers;

  auto map_into = [&](const float** target, const std::string& name) -> Status {
    auto mapped = checkpoint->Map(name);
    if (!mapped.ok()) return mapped.status();
    *target = *mapped;
    return Status::Ok();
  };
  for (int i = layers.begin; i < layers.end; ++i) {
    const std::string h = fmt::format("{}h.{}.", prefix, i);
    BlockWeights block{};
    DGPT_RETURN_IF_ERROR(map_into(&block.ln1_weight, h + "ln_1.weight"));
    DGPT_RETURN_IF_ERROR(map_into(&block.ln1_bias, h + "ln_1.bias"));
    DGPT_RETURN_IF_ERROR(map_into(&block.qkv_weight, h + "attn.c_attn.weight"));
    DGPT_RETURN_IF_ERROR(map_into(&block.qkv_bias, h + "attn.c_attn.bias"));
    DGPT_RETURN_IF_ERROR(map_into(&block.attn_proj_weight, h + "attn.c_proj.weight"));
    DGPT_RETURN_IF_ERROR(map_into(&block.attn_proj_bias, h + "attn.c_proj.bias"));
    DGPT_RETURN_IF_ERROR(map_into(&block.ln2_weight, h + "ln_2.weight"));
    DGPT_RETURN_IF_ERROR(map_into(&block.ln2_bias, h + "ln_2.bias"));
    DGPT_RETURN_IF_ERROR(map_into(&block.fc_weight, h + "mlp.c_fc.weight"));
    DGPT_RETURN_IF_ERROR(map_into(&block.fc_bias, h + "mlp.c_fc.bias"));
    DGPT_RETURN_IF_ERROR(map_into(&block.mlp_proj_weight, h + "mlp.c_proj.weight"));
    DGPT_RETURN_IF_ERROR(map_into(&block.mlp_proj_bias, h + "mlp.c_proj.bias"));
    checkpoint->blocks_.push_back(block);
  }
  if (options.embeddings || options.head) {
    DGPT_RETURN_IF_ERROR(map_into(&checkpoint->wte_, prefix + "wte.weight"));
  }
  if (options.embeddings) {
    DGPT_RETURN_IF_ERROR(map_into(&checkpoint->wpe_, prefix + "wpe.weight"));
  }
  if (options.head) {
    DGPT_RETURN_IF_ERROR(map_into(&checkpoint->ln_f_weight_, prefix + "ln_f.weight"));
    DGPT_RETURN_IF_ERROR(map_into(&checkpoint->ln_f_bias_, prefix + "ln_f.bias"));
    if (has_lm_head) {
      DGPT_RETURN_IF_ERROR(map_into(&checkpoint->lm_head_, "lm_head.weight"));
    } else {
      checkpoint->lm_head_ = checkpoint->wte_;  // GPT-2 ties the head to the token embedding
    }
  }
  return checkpoint;
}

Result<const float*> Checkpoint::Map(const std::string& name) {
  const TensorInfo* info = file_->Find(name);
  if (!info) return Status::Error(file_->path() + ": missing tensor " + name);
  const int64_t count = info->num_elements();
  if (info->dtype == DType::kF32 && reinterpret_cast<uintptr_t>(info->data) % alignof(float) == 0) {
    return reinterpret_cast<const float*>(info->data);  // zero-copy
  }
  auto widened = std::make_unique<float[]>(static_cast<size_t>(count));
  if (info->dtype == DType::kF32) {
    std::memcpy(widened.get(), info->data, static_cast<size_t>(count) * sizeof(float));
  } else {
    for (int64_t i = 0; i < count; ++i) {
      uint16_t bits;
      std::memcpy(&bits, info->data + 2 * i, sizeof(bits));
      widened[i] = info->dtype == DType::kF16 ? HalfToFloat(bits) : BFloat16ToFloat(bits);
    }
  }
  widened_.push_back(std::move(widened));
  return static_cast<const float*>(widened_.back().get());
}

}  // namespace dgpt
