#include "engine/checkpoint.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "engine/fingerprint.h"

namespace dgpt {

MatrixLayout WeightMatrixLayout(std::string_view name) {
  const bool conv1d = name.ends_with("attn.c_attn.weight") ||
                      name.ends_with("attn.c_proj.weight") || name.ends_with("mlp.c_fc.weight") ||
                      name.ends_with("mlp.c_proj.weight");
  if (conv1d) return {true, true};
  return {name.ends_with("wte.weight") || name == "lm_head.weight", false};
}

namespace {

std::string ShapeString(const std::vector<int64_t>& shape) {
  return fmt::format("[{}]", fmt::join(shape, ", "));
}

bool IsFloatDType(DType dtype) {
  return dtype == DType::kF32 || dtype == DType::kF16 || dtype == DType::kBF16;
}

bool IsMatrixName(std::string_view name) {
  return WeightMatrixLayout(name).is_matrix;
}

struct ExpectedTensor {
  std::string name;  // without prefix
  std::vector<int64_t> shape;
};

// The shape the config implies for a block tensor (name as in kBlockTensorNames).
std::vector<int64_t> BlockTensorShape(std::string_view name, const ModelConfig& config) {
  const int64_t C = config.n_embd;
  if (name == "attn.c_attn.weight") return {C, 3 * C};
  if (name == "attn.c_attn.bias") return {3 * C};
  if (name == "attn.c_proj.weight") return {C, C};
  if (name == "mlp.c_fc.weight") return {C, 4 * C};
  if (name == "mlp.c_fc.bias") return {4 * C};
  if (name == "mlp.c_proj.weight") return {4 * C, C};
  return {C};  // LayerNorm parameters and the projections' biases
}

// The tensors of GPT2LMHeadModel's transformer that a folder holding `layers` (and the
// embeddings / final norm if asked) must have, with the shapes the config implies.
std::vector<ExpectedTensor> ExpectedTensors(const ModelConfig& config, LayerRange layers,
                                            bool embeddings, bool final_norm) {
  const int64_t C = config.n_embd, V = config.vocab_size, P = config.n_positions;
  std::vector<ExpectedTensor> expected;
  if (embeddings) expected = {{"wte.weight", {V, C}}, {"wpe.weight", {P, C}}};
  for (int i = layers.begin; i < layers.end; ++i) {
    for (std::string_view name : kBlockTensorNames) {
      expected.push_back({fmt::format("h.{}.{}", i, name), BlockTensorShape(name, config)});
    }
  }
  if (final_norm) {
    expected.push_back({"ln_f.weight", {C}});
    expected.push_back({"ln_f.bias", {C}});
  }
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

Result<bool> ReadBool(const nlohmann::json& json, const char* key, const std::string& source) {
  auto it = json.find(key);
  if (it == json.end()) return Status::Error(source + ": missing \"" + key + "\"");
  if (!it->is_boolean()) {
    return Status::Error(source + ": \"" + key + "\" must be true or false, got " + it->dump());
  }
  return it->get<bool>();
}

Result<std::string> ReadOptionalString(const nlohmann::json& json, const char* key,
                                       const std::string& source) {
  auto it = json.find(key);
  if (it == json.end()) return std::string();
  if (!it->is_string()) {
    return Status::Error(source + ": \"" + key + "\" must be a string, got " + it->dump());
  }
  return it->get<std::string>();
}

}  // namespace

Result<std::optional<ShardInfo>> ReadShardInfo(const std::string& dir, const ModelConfig& config) {
  const std::string path = dir + "/" + std::string(kShardFileName);
  std::error_code error;
  if (!std::filesystem::exists(path, error)) return std::optional<ShardInfo>();
  std::ifstream in(path);
  if (!in) return Status::Error(path + ": cannot open");
  std::stringstream text;
  text << in.rdbuf();
  const nlohmann::json json =
      nlohmann::json::parse(text.str(), nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded()) return Status::Error(path + ": not valid JSON");
  if (!json.is_object()) return Status::Error(path + ": expected a JSON object");

  auto format = json.find("format");
  if (format == json.end() || !format->is_string() || *format != kShardFormat) {
    return Status::Error(fmt::format("{}: \"format\" must be \"{}\", got {}", path, kShardFormat,
                                     format == json.end() ? "nothing" : format->dump()));
  }
  ShardInfo shard;
  auto layers = json.find("layers");
  const bool layers_ok = layers != json.end() && layers->is_array() && layers->size() == 2 &&
                         (*layers)[0].is_number_integer() && (*layers)[1].is_number_integer() &&
                         (*layers)[0].get<int64_t>() >= 0 &&
                         (*layers)[0].get<int64_t>() <= (*layers)[1].get<int64_t>() &&
                         (*layers)[1].get<int64_t>() <= config.n_layer;
  if (!layers_ok) {
    return Status::Error(fmt::format(
        "{}: \"layers\" must be [BEGIN, END] with 0 <= BEGIN <= END <= n_layer ({}), got {}", path,
        config.n_layer, layers == json.end() ? "nothing" : layers->dump()));
  }
  shard.layers = {(*layers)[0].get<int>(), (*layers)[1].get<int>()};
  auto has_embeddings = ReadBool(json, "has_embeddings", path);
  if (!has_embeddings.ok()) return has_embeddings.status();
  shard.has_embeddings = *has_embeddings;
  auto has_head = ReadBool(json, "has_head", path);
  if (!has_head.ok()) return has_head.status();
  shard.has_head = *has_head;
  auto fingerprint = ReadOptionalString(json, "fingerprint", path);
  if (!fingerprint.ok()) return fingerprint.status();
  if (!fingerprint->empty() && !ParseFingerprintHex(*fingerprint).ok()) {
    return Status::Error(path + ": \"fingerprint\" must be 64 hex digits, got \"" + *fingerprint +
                         "\"");
  }
  shard.fingerprint = *fingerprint;
  auto source = ReadOptionalString(json, "source", path);
  if (!source.ok()) return source.status();
  shard.source = *source;
  if (shard.layers.size() == 0 && !shard.has_embeddings && !shard.has_head) {
    return Status::Error(path + ": the shard holds no layers, embeddings or head");
  }
  return std::optional<ShardInfo>(std::move(shard));
}

Result<std::unique_ptr<Checkpoint>> Checkpoint::Load(const std::string& dir,
                                                     const LoadOptions& options) {
  auto checkpoint = std::unique_ptr<Checkpoint>(new Checkpoint());
  checkpoint->dir_ = dir;
  auto config = ModelConfig::Load(dir + "/config.json");
  if (!config.ok()) return config.status();
  checkpoint->config_ = *config;

  auto shard = ReadShardInfo(dir, checkpoint->config_);
  if (!shard.ok()) return shard.status();
  checkpoint->shard_ = std::move(*shard);
  const std::optional<ShardInfo>& shard_info = checkpoint->shard_;

  const std::string path = dir + "/model.safetensors";
  auto file = SafetensorsFile::Open(path);
  if (!file.ok()) return file.status();
  checkpoint->file_ = std::move(file).value();
  const SafetensorsFile& st = *checkpoint->file_;

  if (shard_info) {
    // A stage shard has no wte to recognise the naming by; any prefixed name will do.
    for (const TensorInfo& info : st.tensors()) {
      if (info.name.starts_with("transformer.")) checkpoint->prefix_ = "transformer.";
    }
  } else if (st.Find("transformer.wte.weight")) {
    checkpoint->prefix_ = "transformer.";
  } else if (!st.Find("wte.weight")) {
    return Status::Error(path + ": missing tensor wte.weight (nor transformer.wte.weight); " +
                         "is this a GPT-2 checkpoint?");
  }
  const std::string& prefix = checkpoint->prefix_;

  // Check everything the folder holds against the config, not only the parts this process maps,
  // so a mismatched checkpoint fails the same way on every node.
  const ModelConfig& cfg = checkpoint->config_;
  auto check_tensor = [&](const std::string& name, const std::vector<int64_t>& shape) -> Status {
    const TensorInfo* info = st.Find(name);
    if (!info) return Status::Error(path + ": missing tensor " + name);
    std::vector<int64_t> expected_shape = shape;
    if (IsPackedQ8Tensor(*info) && IsMatrixName(name)) {
      // Packed q8_0 rows: one output per row, so a Conv1D [in, out] is stored [out, in/32, 34].
      const bool conv1d = WeightMatrixLayout(name).transposed;
      const int64_t rows = conv1d ? shape[1] : shape[0], cols = conv1d ? shape[0] : shape[1];
      expected_shape = {rows, cols / kQ8BlockSize, kQ8BlockBytes};
    } else if (!IsFloatDType(info->dtype)) {
      return Status::Error(fmt::format(
          "{}: tensor {} has dtype {}; weights must be F32, F16, BF16 (or packed q8_0 U8)", path,
          name, DTypeName(info->dtype)));
    }
    if (info->shape != expected_shape) {
      return Status::Error(fmt::format(
          "{}: tensor {} has shape {} but config.json (n_layer {}, n_head {}, n_embd {}, "
          "n_positions {}, vocab_size {}) implies {}",
          path, name, ShapeString(info->shape), cfg.n_layer, cfg.n_head, cfg.n_embd,
          cfg.n_positions, cfg.vocab_size, ShapeString(expected_shape)));
    }
    return Status::Ok();
  };
  const LayerRange held = checkpoint->held_layers();
  const bool has_lm_head = st.Find("lm_head.weight") != nullptr;
  std::vector<ExpectedTensor> expected =
      ExpectedTensors(cfg, held, checkpoint->holds_embeddings(), checkpoint->holds_head());
  if (checkpoint->holds_head() && !checkpoint->holds_embeddings() && !has_lm_head) {
    // A head-only shard without lm_head.weight needs wte to tie the head to.
    expected.push_back({"wte.weight", {cfg.vocab_size, cfg.n_embd}});
  }
  for (const ExpectedTensor& tensor : expected) {
    DGPT_RETURN_IF_ERROR(check_tensor(prefix + tensor.name, tensor.shape));
  }
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
    if (block >= 0 && !held.contains(block)) {
      return Status::Error(
          fmt::format("{}: tensor {} belongs to block {} but {}/{} says the shard "
                      "holds layers {}:{}",
                      path, info.name, block, dir, kShardFileName, held.begin, held.end));
    }
  }
  // The dtype of the first matrix the folder holds stands for the checkpoint's.
  checkpoint->weight_dtype_ = DType::kF32;
  for (const ExpectedTensor& tensor : expected) {
    if (IsMatrixName(tensor.name)) {
      checkpoint->weight_dtype_ = st.Find(prefix + tensor.name)->dtype;
      break;
    }
  }

  LayerRange layers = options.layers;
  if (layers.end < 0) layers.end = cfg.n_layer;
  if (layers.begin < 0 || layers.begin > layers.end || layers.end > cfg.n_layer) {
    return Status::Error(fmt::format("{}: layer range {}:{} is outside the model's {} layers", dir,
                                     layers.begin, layers.end, cfg.n_layer));
  }
  if (layers.size() > 0 && (layers.begin < held.begin || layers.end > held.end)) {
    return Status::Error(fmt::format("{} holds layers {}:{} but layers {}:{} were requested", dir,
                                     held.begin, held.end, layers.begin, layers.end));
  }
  if (options.embeddings && !checkpoint->holds_embeddings()) {
    return Status::Error(dir + " is a stage shard without embeddings (wte, wpe)");
  }
  if (options.head && !checkpoint->holds_head()) {
    return Status::Error(dir + " is a stage shard without the head (ln_f, lm_head)");
  }
  checkpoint->layers_ = layers;

  auto map_into = [&](const float** target, const std::string& name) -> Status {
    auto mapped = checkpoint->Map(name);
    if (!mapped.ok()) return mapped.status();
    *target = *mapped;
    return Status::Ok();
  };
  // Every matrix is packed into one arena (engine/weights.h): decode streams them from there.
  std::vector<PackJob> jobs;
  const int64_t C = cfg.n_embd, V = cfg.vocab_size;
  checkpoint->blocks_.resize(static_cast<size_t>(layers.size()));
  for (int i = layers.begin; i < layers.end; ++i) {
    BlockWeights& block = checkpoint->blocks_[i - layers.begin];
    const std::string name = fmt::format("{}h.{}.", prefix, i);
    // Conv1D stores [in, out]: rows (outputs) are its columns.
    const std::optional<WeightFormat> format = options.weight_format;
    jobs.push_back({&block.qkv_weight, name + "attn.c_attn.weight", 3 * C, C, true, format});
    jobs.push_back({&block.attn_proj_weight, name + "attn.c_proj.weight", C, C, true, format});
    jobs.push_back({&block.fc_weight, name + "mlp.c_fc.weight", 4 * C, C, true, format});
    jobs.push_back({&block.mlp_proj_weight, name + "mlp.c_proj.weight", C, 4 * C, true, format});
    const std::pair<const float**, const char*> vectors[] = {
        {&block.ln1_weight, "ln_1.weight"},    {&block.ln1_bias, "ln_1.bias"},
        {&block.qkv_bias, "attn.c_attn.bias"}, {&block.attn_proj_bias, "attn.c_proj.bias"},
        {&block.ln2_weight, "ln_2.weight"},    {&block.ln2_bias, "ln_2.bias"},
        {&block.fc_bias, "mlp.c_fc.bias"},     {&block.mlp_proj_bias, "mlp.c_proj.bias"}};
    for (const auto& [target, tensor] : vectors) {
      DGPT_RETURN_IF_ERROR(map_into(target, name + tensor));
    }
  }
  // The head's format applies to wte too when the head is tied to it: one copy serves both.
  const std::optional<WeightFormat> head_format =
      options.head_format ? options.head_format : options.weight_format;
  const bool tied_head = options.head && !has_lm_head;
  if (options.embeddings || tied_head) {
    jobs.push_back({&checkpoint->wte_, prefix + "wte.weight", V, C, false,
                    tied_head ? head_format : std::nullopt});
  }
  if (options.head && has_lm_head) {
    jobs.push_back({&checkpoint->lm_head_, "lm_head.weight", V, C, false, head_format});
  }
  DGPT_RETURN_IF_ERROR(checkpoint->PackAll(jobs));
  if (options.embeddings) {
    DGPT_RETURN_IF_ERROR(map_into(&checkpoint->wpe_, prefix + "wpe.weight"));
  }
  if (options.head) {
    DGPT_RETURN_IF_ERROR(map_into(&checkpoint->ln_f_weight_, prefix + "ln_f.weight"));
    DGPT_RETURN_IF_ERROR(map_into(&checkpoint->ln_f_bias_, prefix + "ln_f.bias"));
    // GPT-2 ties the head to the token embedding.
    if (!has_lm_head) checkpoint->lm_head_ = checkpoint->wte_;
  }
  if (!checkpoint->blocks_.empty()) {
    checkpoint->weight_format_ = checkpoint->blocks_.front().qkv_weight.format;
  } else if (checkpoint->lm_head_) {
    checkpoint->weight_format_ = checkpoint->lm_head_.format;
  } else if (checkpoint->wte_) {
    checkpoint->weight_format_ = checkpoint->wte_.format;
  }
  return checkpoint;
}

int64_t Checkpoint::block_matrix_bytes() const {
  int64_t bytes = 0;
  for (const BlockWeights& block : blocks_) {
    bytes += block.qkv_weight.bytes() + block.attn_proj_weight.bytes() + block.fc_weight.bytes() +
             block.mlp_proj_weight.bytes();
  }
  return bytes;
}

Status Checkpoint::PackAll(const std::vector<PackJob>& jobs) {
  struct Planned {
    const TensorInfo* info;
    MatrixSource source;
    WeightFormat format;
    int64_t offset;
  };
  std::vector<Planned> plan;
  int64_t arena_bytes = 0;
  for (const PackJob& job : jobs) {
    const TensorInfo* info = file_->Find(job.name);
    if (!info) return Status::Error(file_->path() + ": missing tensor " + job.name);
    // Load validated every matrix: a U8 one is packed q8_0.
    const bool packed_q8 = IsPackedQ8Tensor(*info);
    const WeightFormat format = job.format.value_or(FormatAsStored(info->dtype));
    plan.push_back({info,
                    {info->data, info->dtype, job.rows, job.cols, job.transposed && !packed_q8},
                    format,
                    arena_bytes});
    arena_bytes += (PackedMatrixBytes(format, job.rows, job.cols) + 63) / 64 * 64;
  }
  if (arena_bytes == 0) return Status::Ok();
  arena_ = AllocateWeightArena(static_cast<size_t>(arena_bytes));
  arena_bytes_ = arena_bytes;
  if (!arena_) {
    return Status::Error(fmt::format("{}: cannot allocate {} MiB for the weights", file_->path(),
                                     arena_bytes >> 20));
  }
  for (size_t i = 0; i < jobs.size(); ++i) {
    const Planned& p = plan[i];
    auto matrix = PackMatrixInto(p.source, p.format, arena_.get() + p.offset);
    if (!matrix.ok()) {
      return Status::Error(
          fmt::format("{}: tensor {}: {}", file_->path(), jobs[i].name, matrix.status().message()));
    }
    *jobs[i].target = *matrix;
    // Copied out: the mapped pages are no longer needed, so they stop counting as resident.
    DropMappedPages(p.info->data, static_cast<size_t>(p.info->num_bytes()));
  }
  return Status::Ok();
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
