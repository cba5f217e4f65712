#include "engine/shard.h"

#include <fmt/format.h>

#include <bit>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "engine/fingerprint.h"

namespace dgpt {
namespace fs = std::filesystem;

namespace {

// What is wrong with a stage list, or nullopt; phrased to follow its subject ("--stages X ").
std::optional<std::string> CoverageProblem(const std::vector<LayerRange>& stages, int n_layer) {
  std::vector<int> owners(static_cast<size_t>(n_layer), 0);
  for (const LayerRange& stage : stages) {
    if (stage.begin >= stage.end) {
      return fmt::format("has an empty stage {}:{} (each needs at least one layer)", stage.begin,
                         stage.end);
    }
    if (stage.begin < 0 || stage.end > n_layer) {
      return fmt::format("has stage {}:{} but the model has {} layers (0:{})", stage.begin,
                         stage.end, n_layer, n_layer);
    }
    for (int layer = stage.begin; layer < stage.end; ++layer) ++owners[layer];
  }
  for (int layer = 0; layer < n_layer; ++layer) {
    if (owners[layer] > 1) return fmt::format("gives layer {} to more than one stage", layer);
  }
  for (int layer = 0; layer < n_layer; ++layer) {
    if (owners[layer] != 0) continue;
    int end = layer;
    while (end < n_layer && owners[end] == 0) ++end;
    if (end == layer + 1) return fmt::format("leaves layer {} uncovered", layer);
    return fmt::format("leaves layers {}:{} uncovered", layer, end);
  }
  for (size_t i = 1; i < stages.size(); ++i) {
    if (stages[i].begin != stages[i - 1].end) {
      return fmt::format("lists stage {}:{} after {}:{} (list them in layer order)",
                         stages[i].begin, stages[i].end, stages[i - 1].begin, stages[i - 1].end);
    }
  }
  return std::nullopt;
}

std::string StagesString(const std::vector<LayerRange>& stages) {
  std::string text;
  for (const LayerRange& stage : stages) {
    if (!text.empty()) text += ',';
    text += fmt::format("{}:{}", stage.begin, stage.end);
  }
  return text;
}

// The whole of `text` as a non-negative int, or nullopt.
std::optional<int> ParseCount(std::string_view text) {
  int value = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || error != std::errc() || end != text.data() + text.size() || value < 0) {
    return std::nullopt;
  }
  return value;
}

// Writes through a temporary name and renames, like WriteSafetensors.
Status WriteFileAtomically(const std::string& path, const std::string& contents) {
  const std::string temporary = path + ".tmp";
  {
    std::ofstream out(temporary, std::ios::binary | std::ios::trunc);
    if (!out) return Status::Error(temporary + ": cannot create: " + std::strerror(errno));
    out << contents;
    out.flush();
    if (!out) return Status::Error(temporary + ": cannot write: " + std::strerror(errno));
  }
  std::error_code error;
  fs::rename(temporary, path, error);
  if (error) return Status::Error(path + ": cannot rename " + temporary + ": " + error.message());
  return Status::Ok();
}

Status CopyFileAtomically(const std::string& from, const std::string& to) {
  const std::string temporary = to + ".tmp";
  std::error_code error;
  fs::copy_file(from, temporary, fs::copy_options::overwrite_existing, error);
  if (error)
    return Status::Error(fmt::format("{}: cannot copy to {}: {}", from, to, error.message()));
  fs::rename(temporary, to, error);
  if (error) return Status::Error(to + ": cannot rename " + temporary + ": " + error.message());
  return Status::Ok();
}

void WriteElement(uint8_t* data, DType dtype, int64_t index, float value) {
  if (dtype == DType::kF32) {
    std::memcpy(data + 4 * index, &value, sizeof(value));
    return;
  }
  const uint16_t bits = dtype == DType::kF16 ? FloatToHalf(value) : FloatToBFloat16(value);
  std::memcpy(data + 2 * index, &bits, sizeof(bits));
}

// The tensor as it is to be written: the mapped bytes themselves when the dtype is kept,
// otherwise a converted copy appended to `converted` (which must outlive the write).
Result<TensorToWrite> PrepareTensor(const TensorInfo& info, const ShardFormat& format,
                                    std::vector<std::vector<uint8_t>>& converted,
                                    std::vector<AlignedBytes>& packed) {
  const MatrixLayout layout = WeightMatrixLayout(info.name);
  if (format.q8_0 && layout.is_matrix && info.shape.size() == 2) {
    const int64_t rows = layout.transposed ? info.shape[1] : info.shape[0];
    const int64_t cols = layout.transposed ? info.shape[0] : info.shape[1];
    AlignedBytes& storage = packed.emplace_back();
    auto matrix = PackMatrix({info.data, info.dtype, rows, cols, layout.transposed},
                             WeightFormat::kQ8_0, &storage);
    if (!matrix.ok())
      return Status::Error("tensor " + info.name + ": " + matrix.status().message());
    return TensorToWrite{info.name,
                         DType::kU8,
                         {rows, cols / kQ8BlockSize, kQ8BlockBytes},
                         matrix->data,
                         static_cast<size_t>(matrix->bytes())};
  }
  const std::optional<DType> dtype = format.dtype;
  if (!dtype || *dtype == info.dtype) {
    return TensorToWrite{info.name, info.dtype, info.shape, info.data,
                         static_cast<size_t>(info.num_bytes())};
  }
  const int64_t count = info.num_elements();
  // Moving the outer vector keeps each inner buffer where it is, so earlier pointers stay valid.
  std::vector<uint8_t>& bytes =
      converted.emplace_back(static_cast<size_t>(count) * DTypeSize(*dtype));
  for (int64_t i = 0; i < count; ++i) {
    WriteElement(bytes.data(), *dtype, i, ReadFloatElement(info.data, info.dtype, i));
  }
  return TensorToWrite{info.name, *dtype, info.shape, bytes.data(), bytes.size()};
}

struct WrittenShard {
  std::string fingerprint;  // hex
  uint64_t bytes = 0;       // of model.safetensors
  std::string sha256;       // hex, of model.safetensors
};

// Writes one shard folder holding `tensor_names` of `source`, then reads it back to fingerprint
// it and to check it loads.
Result<WrittenShard> WriteShardFolder(const Checkpoint& source,
                                      const std::vector<std::string>& tensor_names,
                                      const ShardInfo& shard, const std::string& shard_dir,
                                      const ShardFormat& format) {
  std::error_code error;
  fs::create_directories(shard_dir, error);
  if (error) return Status::Error(shard_dir + ": cannot create: " + error.message());
  DGPT_RETURN_IF_ERROR(
      CopyFileAtomically(source.dir() + "/config.json", shard_dir + "/config.json"));
  if (shard.has_embeddings) {  // the coordinator tokenizes
    for (const char* name : {"vocab.json", "merges.txt", "tokenizer.model"}) {
      const std::string from = source.dir() + "/" + name;
      if (fs::exists(from, error)) {
        DGPT_RETURN_IF_ERROR(CopyFileAtomically(from, shard_dir + "/" + name));
      }
    }
  }

  std::vector<std::vector<uint8_t>> converted;
  std::vector<AlignedBytes> packed;
  std::vector<TensorToWrite> tensors;
  for (const std::string& name : tensor_names) {
    const TensorInfo* info = source.file().Find(name);
    if (!info) return Status::Error(source.file().path() + ": missing tensor " + name);
    auto tensor = PrepareTensor(*info, format, converted, packed);
    if (!tensor.ok()) return tensor.status();
    tensors.push_back(*tensor);
  }
  // A stale shard.json from an earlier split must not describe the new weights if we stop
  // half-way; without one the folder fails to load instead of loading wrong.
  const std::string shard_json_path = shard_dir + "/" + std::string(kShardFileName);
  fs::remove(shard_json_path, error);
  if (error) return Status::Error(shard_json_path + ": cannot remove: " + error.message());
  const std::string weights_path = shard_dir + "/model.safetensors";
  DGPT_RETURN_IF_ERROR(WriteSafetensors(weights_path, tensors, {{"format", "pt"}}));
  converted.clear();

  // The fingerprint is of the bytes as written (so a converted shard has its own).
  auto written = SafetensorsFile::Open(weights_path);
  if (!written.ok()) return written.status();
  auto fingerprint =
      StageFingerprint(source.config(), **written, source.tensor_prefix(), shard.layers);
  if (!fingerprint.ok()) return fingerprint.status();
  auto sha256 = FileSha256(weights_path);
  if (!sha256.ok()) return sha256.status();
  WrittenShard result{FingerprintHex(*fingerprint), fs::file_size(weights_path, error),
                      FingerprintHex(*sha256)};
  if (error) return Status::Error(weights_path + ": cannot stat: " + error.message());

  const nlohmann::ordered_json shard_json = {{"format", kShardFormat},
                                             {"layers", {shard.layers.begin, shard.layers.end}},
                                             {"has_embeddings", shard.has_embeddings},
                                             {"has_head", shard.has_head},
                                             {"fingerprint", result.fingerprint},
                                             {"source", shard.source}};
  DGPT_RETURN_IF_ERROR(WriteFileAtomically(shard_json_path, shard_json.dump(2) + "\n"));

  // Validates what was written the way every worker will, without mapping anything.
  auto reloaded = Checkpoint::Load(
      shard_dir, LoadOptions{.layers = {0, 0}, .embeddings = false, .head = false});
  if (!reloaded.ok()) {
    return Status::Error("the shard just written does not load back: " +
                         reloaded.status().message());
  }
  return result;
}

}  // namespace

Status CheckStagesCoverModel(const std::vector<LayerRange>& stages, int n_layer) {
  if (auto problem = CoverageProblem(stages, n_layer)) {
    return Status::Error(fmt::format("stage list {} {}", StagesString(stages), *problem));
  }
  return Status::Ok();
}

Result<std::vector<LayerRange>> ParseStages(std::string_view spec, int n_layer) {
  auto error = [&](const std::string& problem) {
    return Status::Error(fmt::format("--stages {}{}", spec, problem));
  };
  std::vector<LayerRange> stages;
  if (spec.starts_with("auto:")) {
    const std::optional<int> count = ParseCount(spec.substr(5));
    if (!count || *count < 1) return error(": auto:N needs a number of stages N >= 1");
    if (*count > n_layer) {
      return error(
          fmt::format(" asks for {} stages but the model has only {} layers", *count, n_layer));
    }
    // Earlier stages take the extra layers: 12 layers in 5 stages are 3,3,2,2,2.
    int begin = 0;
    for (int i = 0; i < *count; ++i) {
      const int size = n_layer / *count + (i < n_layer % *count ? 1 : 0);
      stages.push_back({begin, begin + size});
      begin += size;
    }
    return stages;
  }
  size_t start = 0;
  while (true) {
    const size_t comma = spec.find(',', start);
    const std::string_view piece = spec.substr(
        start, comma == std::string_view::npos ? std::string_view::npos : comma - start);
    const size_t colon = piece.find(':');
    const std::optional<int> begin =
        colon == std::string_view::npos ? std::nullopt : ParseCount(piece.substr(0, colon));
    const std::optional<int> end =
        colon == std::string_view::npos ? std::nullopt : ParseCount(piece.substr(colon + 1));
    if (!begin || !end) {
      return error(
          fmt::format(": \"{}\" is not BEGIN:END (expected e.g. 0:4,4:8 or auto:2)", piece));
    }
    stages.push_back({*begin, *end});
    if (comma == std::string_view::npos) break;
    start = comma + 1;
  }
  if (auto problem = CoverageProblem(stages, n_layer)) return error(" " + *problem);
  return stages;
}

Status WriteShards(const std::string& model_dir, const std::vector<LayerRange>& stages,
                   const std::string& out_dir, const ShardFormat& format) {
  const std::optional<DType> dtype = format.dtype;
  if (dtype && *dtype != DType::kF32 && *dtype != DType::kF16 && *dtype != DType::kBF16) {
    return Status::Error(
        fmt::format("cannot convert weights to {} (only F32, F16 or BF16)", DTypeName(*dtype)));
  }
  // Validates the whole source against its config; maps nothing (tensors are read raw).
  auto source = Checkpoint::Load(model_dir,
                                 LoadOptions{.layers = {0, 0}, .embeddings = false, .head = false});
  if (!source.ok()) return source.status();
  const Checkpoint& model = **source;
  if (model.shard()) {
    return Status::Error(fmt::format("{} is already a shard (it has {}); split the full checkpoint",
                                     model_dir, kShardFileName));
  }
  DGPT_RETURN_IF_ERROR(CheckStagesCoverModel(stages, model.config().n_layer));
  const std::string& prefix = model.tensor_prefix();

  nlohmann::ordered_json manifest = {
      {"format", kSplitManifestFormat},
      {"config", model.config().ToJson()},
      {"dtype", format.q8_0 ? std::string("Q8_0")
                            : std::string(DTypeName(dtype ? *dtype : model.weight_dtype()))},
      {"source", model_dir},
      {"stages", nlohmann::ordered_json::array()}};
  for (size_t k = 0; k < stages.size(); ++k) {
    const LayerRange layers = stages[k];
    std::vector<std::string> names;
    for (int block = layers.begin; block < layers.end; ++block) {
      for (std::string_view tensor : kBlockTensorNames) {
        names.push_back(fmt::format("{}h.{}.{}", prefix, block, tensor));
      }
    }
    const std::string dir_name = fmt::format("stage-{}", k);
    ShardInfo shard{.layers = layers,
                    .has_embeddings = false,
                    .has_head = false,
                    .fingerprint = "",
                    .source = model_dir};
    auto written = WriteShardFolder(model, names, shard, out_dir + "/" + dir_name, format);
    if (!written.ok()) return written.status();
    manifest["stages"].push_back({{"dir", dir_name},
                                  {"layers", {layers.begin, layers.end}},
                                  {"fingerprint", written->fingerprint},
                                  {"bytes", written->bytes},
                                  {"sha256", written->sha256}});
  }

  std::vector<std::string> names = {prefix + "wte.weight", prefix + "wpe.weight",
                                    prefix + "ln_f.weight", prefix + "ln_f.bias"};
  if (model.file().Find("lm_head.weight")) names.push_back("lm_head.weight");
  ShardInfo coordinator{.layers = {0, 0},
                        .has_embeddings = true,
                        .has_head = true,
                        .fingerprint = "",
                        .source = model_dir};
  auto written = WriteShardFolder(model, names, coordinator, out_dir + "/coordinator", format);
  if (!written.ok()) return written.status();
  manifest["coordinator"] = {
      {"dir", "coordinator"}, {"bytes", written->bytes}, {"sha256", written->sha256}};

  return WriteFileAtomically(out_dir + "/manifest.json", manifest.dump(2) + "\n");
}

}  // namespace dgpt
