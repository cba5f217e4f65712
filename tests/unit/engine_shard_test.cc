// Shards written by `dgpt split` and the fingerprints that identify a model slice: stage lists,
// what each shard holds, that shards load and agree bit for bit (and by fingerprint) with the
// full checkpoint, and every way a shard folder can be wrong.
#include "engine/shard.h"
#include "tests/unit/gpt2_test_shapes.h"
#include "tests/unit/weight_test_util.h"

#include <unistd.h>

#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <nlohmann/json.hpp>

#include "engine/checkpoint.h"
#include "engine/fingerprint.h"

using namespace dgpt;
namespace fs = std::filesystem;

namespace {

// A unique folder per process and call: ctest runs test cases as parallel processes.
std::string TempDir(const std::string& stem) {
  static int counter = 0;
  const std::string dir = std::string(DGPT_TEST_TMP) + "/shard_" + stem + "_" +
                          std::to_string(::getpid()) + "_" + std::to_string(counter++);
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

// A tiny GPT-2 checkpoint (4 layers) with distinct, irregular values in every tensor, so a
// misplaced or re-rounded tensor shows.
struct TinyModel {
  int n_layer = 4, n_head = 2, n_embd = 8, n_positions = 16, vocab_size = 11;
  std::string prefix = "transformer.";
  DType dtype = DType::kF32;
  bool explicit_lm_head = false;
  bool tokenizer_files = true;
  uint32_t seed = 1;

  nlohmann::json Config() const {
    return {{"n_layer", n_layer},
            {"n_head", n_head},
            {"n_embd", n_embd},
            {"n_positions", n_positions},
            {"vocab_size", vocab_size},
            {"layer_norm_epsilon", 1e-5},
            {"activation_function", "gelu_new"}};
  }

  std::map<std::string, std::vector<int64_t>> Shapes() const {
    auto shapes = testing::Gpt2TensorShapes(n_layer, n_embd, vocab_size, n_positions, prefix);
    for (int i = 0; i < n_layer; ++i) {  // mask buffers, which a split drops
      shapes[prefix + "h." + std::to_string(i) + ".attn.bias"] = {1, 1, n_positions, n_positions};
    }
    if (explicit_lm_head) shapes["lm_head.weight"] = {vocab_size, n_embd};
    return shapes;
  }

  std::string Write(const std::string& name) const {
    const std::string dir = TempDir(name);
    std::ofstream(dir + "/config.json") << Config().dump();
    if (tokenizer_files) {
      std::ofstream(dir + "/vocab.json") << R"({"a": 0})";
      std::ofstream(dir + "/merges.txt") << "#version: 0.2\n";
    }
    std::vector<std::vector<uint8_t>> buffers;
    std::vector<TensorToWrite> tensors;
    for (const auto& [tensor_name, shape] : Shapes()) {
      int64_t count = 1;
      for (int64_t d : shape) count *= d;
      std::vector<uint8_t>& bytes = buffers.emplace_back(count * DTypeSize(dtype));
      uint32_t state = seed * 2654435761u;
      // Values depend on the name without prefix, so prefixed and bare files hold the same.
      for (char c : tensor_name.substr(tensor_name.starts_with(prefix) ? prefix.size() : 0)) {
        state = state * 31 + static_cast<uint8_t>(c);
      }
      for (int64_t i = 0; i < count; ++i) {
        state = state * 1664525u + 1013904223u;
        const float value = (static_cast<float>(state >> 8) / 16777216.0f - 0.5f) * 0.3f;
        if (dtype == DType::kF32) {
          std::memcpy(&bytes[4 * i], &value, 4);
        } else {
          const uint16_t bits = dtype == DType::kF16 ? FloatToHalf(value) : FloatToBFloat16(value);
          std::memcpy(&bytes[2 * i], &bits, 2);
        }
      }
      tensors.push_back({tensor_name, dtype, shape, bytes.data(), bytes.size()});
    }
    REQUIRE(WriteSafetensors(dir + "/model.safetensors", tensors).ok());
    return dir;
  }
};

std::string ReadText(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

nlohmann::json ReadJson(const std::string& path) {
  return nlohmann::json::parse(ReadText(path));
}

std::string StagesError(std::string_view spec, int n_layer) {
  auto stages = ParseStages(spec, n_layer);
  REQUIRE_FALSE(stages.ok());
  const std::string message = stages.status().message();
  REQUIRE(message.find('\n') == std::string::npos);
  return message;
}

std::string LoadError(const std::string& dir, const LoadOptions& options = {}) {
  auto loaded = Checkpoint::Load(dir, options);
  REQUIRE_FALSE(loaded.ok());
  const std::string message = loaded.status().message();
  REQUIRE(message.find('\n') == std::string::npos);
  return message;
}

std::unique_ptr<Checkpoint> LoadOk(const std::string& dir, const LoadOptions& options = {}) {
  auto loaded = Checkpoint::Load(dir, options);
  if (!loaded.ok()) FAIL(loaded.status().message());
  return std::move(loaded).value();
}

Fingerprint FingerprintOf(const std::string& dir, LayerRange layers) {
  auto model = LoadOk(dir, LoadOptions{.layers = {0, 0}, .embeddings = false, .head = false});
  auto fingerprint = StageFingerprint(*model, layers);
  if (!fingerprint.ok()) FAIL(fingerprint.status().message());
  return *fingerprint;
}

std::string Split(const std::string& model_dir, const std::vector<LayerRange>& stages,
                  const std::string& name, ShardFormat format = {}) {
  const std::string out = TempDir(name);
  Status status = WriteShards(model_dir, stages, out, format);
  if (!status.ok()) FAIL(status.message());
  return out;
}

constexpr LoadOptions kBlocksOnly(LayerRange layers) {
  return LoadOptions{.layers = layers, .embeddings = false, .head = false};
}

}  // namespace

TEST_CASE("ParseStages accepts explicit lists and auto:N", "[shard]") {
  auto three = ParseStages("0:4,4:8,8:12", 12);
  REQUIRE(three.ok());
  REQUIRE(*three == std::vector<LayerRange>{{0, 4}, {4, 8}, {8, 12}});
  auto one = ParseStages("0:12", 12);
  REQUIRE(one.ok());
  REQUIRE(*one == std::vector<LayerRange>{{0, 12}});
  auto uneven = ParseStages("auto:5", 12);
  REQUIRE(uneven.ok());
  REQUIRE(*uneven == std::vector<LayerRange>{{0, 3}, {3, 6}, {6, 8}, {8, 10}, {10, 12}});
  auto single = ParseStages("auto:1", 6);
  REQUIRE(single.ok());
  REQUIRE(*single == std::vector<LayerRange>{{0, 6}});
  auto per_layer = ParseStages("auto:3", 3);
  REQUIRE(per_layer.ok());
  REQUIRE(*per_layer == std::vector<LayerRange>{{0, 1}, {1, 2}, {2, 3}});
}

TEST_CASE("ParseStages names gaps, overlaps, ranges and garbage in one line", "[shard]") {
  REQUIRE_THAT(StagesError("0:4,5:12", 12),
               Catch::Equals("--stages 0:4,5:12 leaves layer 4 uncovered"));
  REQUIRE_THAT(StagesError("0:4,4:10", 12), Catch::Contains("leaves layers 10:12 uncovered"));
  REQUIRE_THAT(StagesError("2:12", 12), Catch::Contains("leaves layers 0:2 uncovered"));
  REQUIRE_THAT(StagesError("0:5,4:12", 12),
               Catch::Contains("gives layer 4 to more than one stage"));
  REQUIRE_THAT(StagesError("0:12,0:12", 12), Catch::Contains("gives layer 0 to more than one"));
  REQUIRE_THAT(StagesError("0:4,4:13", 12), Catch::Contains("the model has 12 layers"));
  REQUIRE_THAT(StagesError("0:4,4:4,4:12", 12), Catch::Contains("empty stage 4:4"));
  REQUIRE_THAT(StagesError("8:4,0:8,8:12", 12), Catch::Contains("empty stage 8:4"));
  REQUIRE_THAT(StagesError("4:12,0:4", 12), Catch::Contains("layer order"));
  REQUIRE_THAT(StagesError("auto:0", 12), Catch::Contains("N >= 1"));
  REQUIRE_THAT(StagesError("auto:13", 12),
               Catch::Contains("asks for 13 stages but the model has only 12 layers"));
  for (std::string_view garbage : {"", "abc", "0-4", "0:4,", ",0:4", "0:x", "-1:4", "0:4:8", " 0:4",
                                   "0:4;4:12", "auto:x", "auto:", "auto:2x", "99999999999:1"}) {
    INFO(garbage);
    REQUIRE_THAT(StagesError(garbage, 12),
                 Catch::Contains("is not BEGIN:END") || Catch::Contains("auto:N needs"));
  }
}

TEST_CASE("fingerprints print as hex and parse back", "[shard][fingerprint]") {
  Fingerprint fingerprint{};
  for (size_t i = 0; i < fingerprint.size(); ++i) fingerprint[i] = static_cast<uint8_t>(i * 37);
  const std::string hex = FingerprintHex(fingerprint);
  REQUIRE(hex.size() == 64);
  REQUIRE(hex.substr(0, 6) == "00254a");
  auto parsed = ParseFingerprintHex(hex);
  REQUIRE(parsed.ok());
  REQUIRE(*parsed == fingerprint);
  std::string upper = hex;
  for (char& c : upper) c = static_cast<char>(std::toupper(c));
  REQUIRE(ParseFingerprintHex(upper).ok());
  REQUIRE(ParseFingerprintHex(upper).value() == fingerprint);
  for (const std::string& bad :
       {std::string(), hex.substr(1), hex + "0", "g" + hex.substr(1), hex.substr(0, 63) + " "}) {
    auto result = ParseFingerprintHex(bad);
    REQUIRE_FALSE(result.ok());
    REQUIRE_THAT(result.status().message(), Catch::Contains("64 hex digits"));
  }
}

TEST_CASE("narrowing to F16 and BF16 rounds to nearest even", "[shard]") {
  // Every finite half survives a round trip through float.
  for (uint32_t bits = 0; bits < 0x10000; ++bits) {
    const auto half = static_cast<uint16_t>(bits);
    if ((half & 0x7c00) == 0x7c00 && (half & 0x3ff) != 0) continue;  // NaN
    REQUIRE(FloatToHalf(HalfToFloat(half)) == half);
  }
  REQUIRE(FloatToHalf(1.0f + std::ldexp(1.0f, -11)) == 0x3c00);      // tie: down to even
  REQUIRE(FloatToHalf(1.0f + 3 * std::ldexp(1.0f, -11)) == 0x3c02);  // tie: up to even
  REQUIRE(FloatToHalf(1.0f + std::ldexp(1.0f, -11) + std::ldexp(1.0f, -20)) == 0x3c01);
  REQUIRE(FloatToHalf(65504.0f) == 0x7bff);
  REQUIRE(FloatToHalf(65519.0f) == 0x7bff);
  REQUIRE(FloatToHalf(65520.0f) == 0x7c00);  // rounds to infinity
  REQUIRE(FloatToHalf(-1e10f) == 0xfc00);
  REQUIRE(FloatToHalf(std::ldexp(1.0f, -25)) == 0x0000);      // tie with 0: even is 0
  REQUIRE(FloatToHalf(3 * std::ldexp(1.0f, -25)) == 0x0002);  // tie: up to even
  REQUIRE(FloatToHalf(std::ldexp(1023.0f, -24)) == 0x03ff);   // largest subnormal
  REQUIRE(FloatToHalf(std::ldexp(1023.5f, -24)) == 0x0400);   // rounds into the normals
  REQUIRE(FloatToHalf(-0.0f) == 0x8000);
  REQUIRE(std::isnan(HalfToFloat(FloatToHalf(std::nanf("")))));

  REQUIRE(FloatToBFloat16(1.0f) == 0x3f80);
  REQUIRE(FloatToBFloat16(std::bit_cast<float>(0x3f808000u)) == 0x3f80);  // tie: down to even
  REQUIRE(FloatToBFloat16(std::bit_cast<float>(0x3f818000u)) == 0x3f82);  // tie: up to even
  REQUIRE(FloatToBFloat16(std::bit_cast<float>(0x3f808001u)) == 0x3f81);
  REQUIRE(std::isnan(BFloat16ToFloat(FloatToBFloat16(std::nanf("")))));
  REQUIRE(FloatToBFloat16(std::bit_cast<float>(0x7f7fffffu)) == 0x7f80);  // overflow: infinity
}

TEST_CASE("each stage shard loads with its layers, bit for bit and with the same fingerprint",
          "[shard]") {
  TinyModel tiny;
  const std::string source = tiny.Write("source");
  const std::vector<LayerRange> stages = {{0, 1}, {1, 3}, {3, 4}};
  const std::string out = Split(source, stages, "out");
  auto full = LoadOk(source);
  REQUIRE(full->held_layers() == LayerRange{0, 4});
  REQUIRE_FALSE(full->shard());

  const nlohmann::json manifest = ReadJson(out + "/manifest.json");
  REQUIRE(manifest["format"] == "dgpt-split-v1");
  REQUIRE(manifest["config"] == full->config().ToJson());
  REQUIRE(manifest["stages"].size() == 3);

  for (size_t k = 0; k < stages.size(); ++k) {
    const LayerRange layers = stages[k];
    const std::string dir = out + "/stage-" + std::to_string(k);
    INFO(dir);
    auto shard = LoadOk(dir, kBlocksOnly(layers));
    REQUIRE(shard->layers() == layers);
    REQUIRE(shard->held_layers() == layers);
    REQUIRE(shard->shard());
    REQUIRE_FALSE(shard->holds_embeddings());
    REQUIRE_FALSE(shard->holds_head());
    REQUIRE(shard->weight_dtype() == DType::kF32);
    REQUIRE(ReadText(dir + "/config.json") == ReadText(source + "/config.json"));
    REQUIRE_FALSE(fs::exists(dir + "/vocab.json"));

    // Only this stage's 12 tensors per block, named as in the source; mask buffers dropped.
    REQUIRE(shard->file().tensors().size() == 12 * static_cast<size_t>(layers.size()));
    const int64_t C = tiny.n_embd;
    for (int layer = layers.begin; layer < layers.end; ++layer) {
      const BlockWeights& a = shard->block(layer);
      const BlockWeights& b = full->block(layer);
      REQUIRE(WeightsAsFloat(a.qkv_weight) == WeightsAsFloat(b.qkv_weight));
      REQUIRE(std::memcmp(a.ln1_weight, b.ln1_weight, C * sizeof(float)) == 0);
      REQUIRE(std::memcmp(a.fc_bias, b.fc_bias, 4 * C * sizeof(float)) == 0);
      REQUIRE(WeightsAsFloat(a.mlp_proj_weight) == WeightsAsFloat(b.mlp_proj_weight));
      REQUIRE(std::memcmp(a.mlp_proj_bias, b.mlp_proj_bias, C * sizeof(float)) == 0);
      for (std::string_view name : kBlockTensorNames) {
        const std::string full_name =
            "transformer.h." + std::to_string(layer) + "." + std::string(name);
        const TensorInfo* written = shard->file().Find(full_name);
        const TensorInfo* original = full->file().Find(full_name);
        REQUIRE(written);
        REQUIRE(written->shape == original->shape);
        REQUIRE(std::memcmp(written->data, original->data, original->num_bytes()) == 0);
      }
    }

    const Fingerprint from_full = FingerprintOf(source, layers);
    auto from_shard = StageFingerprint(*shard, layers);
    REQUIRE(from_shard.ok());
    REQUIRE(*from_shard == from_full);
    const nlohmann::json shard_json = ReadJson(dir + "/shard.json");
    REQUIRE(shard_json["format"] == "dgpt-shard-v1");
    REQUIRE(shard_json["layers"] == nlohmann::json::array({layers.begin, layers.end}));
    REQUIRE(shard_json["has_embeddings"] == false);
    REQUIRE(shard_json["has_head"] == false);
    REQUIRE(shard_json["fingerprint"] == FingerprintHex(from_full));
    REQUIRE(shard_json["source"] == source);
    REQUIRE(shard->shard()->fingerprint == FingerprintHex(from_full));

    const nlohmann::json& entry = manifest["stages"][k];
    REQUIRE(entry["dir"] == "stage-" + std::to_string(k));
    REQUIRE(entry["layers"] == nlohmann::json::array({layers.begin, layers.end}));
    REQUIRE(entry["fingerprint"] == FingerprintHex(from_full));
    REQUIRE(entry["bytes"] == fs::file_size(dir + "/model.safetensors"));
    auto sha256 = FileSha256(dir + "/model.safetensors");
    REQUIRE(sha256.ok());
    REQUIRE(entry["sha256"] == FingerprintHex(*sha256));
  }
}

TEST_CASE("fingerprints tell apart ranges, weights and configs but not file layouts",
          "[shard][fingerprint]") {
  TinyModel tiny;
  const std::string source = tiny.Write("fp_source");
  const Fingerprint all = FingerprintOf(source, {0, 4});
  REQUIRE(FingerprintOf(source, {0, 4}) == all);  // deterministic
  REQUIRE(FingerprintOf(source, {0, 2}) != all);
  REQUIRE(FingerprintOf(source, {0, 2}) != FingerprintOf(source, {2, 4}));
  REQUIRE(FingerprintOf(source, {0, 0}) != FingerprintOf(source, {0, 1}));
  REQUIRE(FingerprintOf(source, {1, 1}) == FingerprintOf(source, {0, 0}));  // config only

  SECTION("one flipped byte in a block changes that block's fingerprints only") {
    const std::string copy = TempDir("fp_flipped");
    fs::copy(source, copy, fs::copy_options::recursive | fs::copy_options::overwrite_existing);
    auto model = LoadOk(source, kBlocksOnly({0, 0}));
    const TensorInfo* tensor = model->file().Find("transformer.h.2.mlp.c_fc.weight");
    std::string bytes = ReadText(copy + "/model.safetensors");
    uint64_t header_size = 0;
    REQUIRE(bytes.size() == fs::file_size(source + "/model.safetensors"));
    std::memcpy(&header_size, bytes.data(), sizeof(header_size));  // little-endian host
    bytes[8 + header_size + tensor->begin + 5] ^= 0x01;
    std::ofstream(copy + "/model.safetensors", std::ios::binary | std::ios::trunc) << bytes;
    REQUIRE(FingerprintOf(copy, {0, 4}) != all);
    REQUIRE(FingerprintOf(copy, {2, 3}) != FingerprintOf(source, {2, 3}));
    REQUIRE(FingerprintOf(copy, {0, 2}) == FingerprintOf(source, {0, 2}));
    REQUIRE(FingerprintOf(copy, {3, 4}) == FingerprintOf(source, {3, 4}));
  }
  SECTION("a different config changes every fingerprint") {
    const std::string copy = TempDir("fp_config");
    fs::copy(source, copy, fs::copy_options::recursive | fs::copy_options::overwrite_existing);
    nlohmann::json config = tiny.Config();
    config["layer_norm_epsilon"] = 1e-6;
    std::ofstream(copy + "/config.json") << config.dump();
    REQUIRE(FingerprintOf(copy, {0, 4}) != all);
    REQUIRE(FingerprintOf(copy, {0, 0}) != FingerprintOf(source, {0, 0}));
  }
  SECTION("the transformer. prefix and unused config keys do not matter") {
    TinyModel unprefixed = tiny;
    unprefixed.prefix = "";
    const std::string copy = unprefixed.Write("fp_unprefixed");
    nlohmann::json config = tiny.Config();
    config["architectures"] = {"GPT2LMHeadModel"};
    std::ofstream(copy + "/config.json") << config.dump(4);
    REQUIRE(FingerprintOf(copy, {0, 4}) == all);
  }
  SECTION("other seeds give other weights and other fingerprints") {
    TinyModel other = tiny;
    other.seed = 2;
    REQUIRE(FingerprintOf(other.Write("fp_seed2"), {0, 4}) != all);
  }
  SECTION("a range outside the model or the shard is an error") {
    auto model = LoadOk(source, kBlocksOnly({0, 0}));
    auto past_end = StageFingerprint(*model, {0, 5});
    REQUIRE_FALSE(past_end.ok());
    REQUIRE_THAT(past_end.status().message(), Catch::Contains("layers 0:5"));
    const std::string out = Split(source, {{0, 2}, {2, 4}}, "fp_range");
    auto shard = LoadOk(out + "/stage-1", kBlocksOnly({0, 0}));
    auto outside = StageFingerprint(*shard, {1, 3});
    REQUIRE_FALSE(outside.ok());
    REQUIRE_THAT(outside.status().message(), Catch::Contains("holds layers 2:4"));
  }
}

TEST_CASE("the coordinator shard holds embeddings, head and tokenizer but no layers", "[shard]") {
  for (bool explicit_lm_head : {false, true}) {
    TinyModel tiny;
    tiny.explicit_lm_head = explicit_lm_head;
    const std::string source = tiny.Write(explicit_lm_head ? "coord_lm_head" : "coord_tied");
    const std::string out = Split(source, {{0, 4}}, "coord_out");
    const std::string dir = out + "/coordinator";
    auto coordinator = LoadOk(dir, LoadOptions{.layers = {0, 0}});
    REQUIRE(coordinator->held_layers() == LayerRange{0, 0});
    REQUIRE(coordinator->holds_embeddings());
    REQUIRE(coordinator->holds_head());
    REQUIRE((coordinator->file().Find("lm_head.weight") != nullptr) == explicit_lm_head);
    REQUIRE((coordinator->lm_head().data == coordinator->token_embedding().data) ==
            !explicit_lm_head);
    auto full = LoadOk(source);
    const size_t C = tiny.n_embd, P = tiny.n_positions;
    REQUIRE(WeightsAsFloat(coordinator->token_embedding()) ==
            WeightsAsFloat(full->token_embedding()));
    REQUIRE(std::memcmp(coordinator->position_embedding(), full->position_embedding(),
                        P * C * sizeof(float)) == 0);
    REQUIRE(WeightsAsFloat(coordinator->lm_head()) == WeightsAsFloat(full->lm_head()));
    REQUIRE(std::memcmp(coordinator->final_norm_bias(), full->final_norm_bias(),
                        C * sizeof(float)) == 0);
    REQUIRE(ReadText(dir + "/vocab.json") == ReadText(source + "/vocab.json"));
    REQUIRE(ReadText(dir + "/merges.txt") == ReadText(source + "/merges.txt"));
    REQUIRE_FALSE(fs::exists(dir + "/tokenizer.model"));

    const nlohmann::json shard_json = ReadJson(dir + "/shard.json");
    REQUIRE(shard_json["layers"] == nlohmann::json::array({0, 0}));
    REQUIRE(shard_json["has_embeddings"] == true);
    REQUIRE(shard_json["has_head"] == true);
    const nlohmann::json manifest = ReadJson(out + "/manifest.json");
    REQUIRE(manifest["coordinator"]["dir"] == "coordinator");
    REQUIRE(manifest["coordinator"]["bytes"] == fs::file_size(dir + "/model.safetensors"));
    REQUIRE(manifest["coordinator"]["sha256"] ==
            FingerprintHex(FileSha256(dir + "/model.safetensors").value()));

    REQUIRE_THAT(LoadError(dir), Catch::Equals(dir + " holds layers 0:0 but layers 0:4 were "
                                                     "requested"));
  }
}

TEST_CASE("asking a shard for what it does not hold is a one-line error", "[shard]") {
  TinyModel tiny;
  const std::string out = Split(tiny.Write("ask_source"), {{0, 2}, {2, 4}}, "ask_out");
  const std::string stage = out + "/stage-1";
  REQUIRE_THAT(LoadError(stage),
               Catch::Equals(stage + " holds layers 2:4 but layers 0:4 were requested"));
  REQUIRE_THAT(LoadError(stage, kBlocksOnly({1, 3})),
               Catch::Equals(stage + " holds layers 2:4 but layers 1:3 were requested"));
  REQUIRE_THAT(LoadError(stage, LoadOptions{.layers = {2, 4}, .embeddings = true, .head = false}),
               Catch::Equals(stage + " is a stage shard without embeddings (wte, wpe)"));
  REQUIRE_THAT(LoadError(stage, LoadOptions{.layers = {2, 4}, .embeddings = false, .head = true}),
               Catch::Contains("without the head"));
  REQUIRE_THAT(LoadError(stage, kBlocksOnly({2, 5})),
               Catch::Contains("layer range 2:5 is outside the model's 4 layers"));
  // Part of what it holds, or nothing at all (a worker not yet assigned), is fine.
  REQUIRE(LoadOk(stage, kBlocksOnly({3, 4}))->layers() == LayerRange{3, 4});
  auto unassigned = LoadOk(stage, kBlocksOnly({0, 0}));
  REQUIRE(unassigned->held_layers() == LayerRange{2, 4});
}

TEST_CASE("F16 and BF16 shards load, and their fingerprints are their own", "[shard]") {
  TinyModel tiny;
  const std::string source = tiny.Write("f16_source");
  const std::vector<LayerRange> stages = {{0, 2}, {2, 4}};
  const std::string f32 = Split(source, stages, "f16_as_f32", {DType::kF32});
  const std::string f16 = Split(source, stages, "f16_out", {DType::kF16});
  const std::string bf16 = Split(source, stages, "bf16_out", {DType::kBF16});
  auto full = LoadOk(source);
  const Fingerprint f32_fingerprint = FingerprintOf(f32 + "/stage-1", {2, 4});
  REQUIRE(f32_fingerprint == FingerprintOf(source, {2, 4}));  // f32 -> f32 changes nothing
  for (const auto& [out, dtype] : {std::pair{f16, DType::kF16}, std::pair{bf16, DType::kBF16}}) {
    INFO(DTypeName(dtype));
    auto shard = LoadOk(out + "/stage-1", kBlocksOnly({2, 4}));
    REQUIRE(shard->weight_dtype() == dtype);
    const std::vector<float> originals = WeightsAsFloat(full->block(3).fc_weight);
    const std::vector<float> loaded = WeightsAsFloat(shard->block(3).fc_weight);
    REQUIRE(loaded.size() == originals.size());
    for (size_t i = 0; i < originals.size(); ++i) {
      const float original = originals[i];
      const float expected = dtype == DType::kF16 ? HalfToFloat(FloatToHalf(original))
                                                  : BFloat16ToFloat(FloatToBFloat16(original));
      REQUIRE(loaded[i] == expected);
    }
    const Fingerprint fingerprint = FingerprintOf(out + "/stage-1", {2, 4});
    REQUIRE(fingerprint != f32_fingerprint);
    REQUIRE(ReadJson(out + "/stage-1/shard.json")["fingerprint"] == FingerprintHex(fingerprint));
    auto coordinator = LoadOk(out + "/coordinator", LoadOptions{.layers = {0, 0}});
    REQUIRE(coordinator->weight_dtype() == dtype);
    REQUIRE(ReadJson(out + "/manifest.json")["dtype"] == DTypeName(dtype));
  }
  REQUIRE(FingerprintOf(f16 + "/stage-1", {2, 4}) != FingerprintOf(bf16 + "/stage-1", {2, 4}));

  SECTION("an F16 checkpoint split as it is hashes its F16 bytes") {
    TinyModel half = tiny;
    half.dtype = DType::kF16;
    const std::string half_source = half.Write("f16_native");
    const std::string kept = Split(half_source, stages, "f16_kept");
    REQUIRE(LoadOk(kept + "/stage-0", kBlocksOnly({0, 2}))->weight_dtype() == DType::kF16);
    REQUIRE(FingerprintOf(kept + "/stage-0", {0, 2}) == FingerprintOf(half_source, {0, 2}));
    // Widening back to f32 is exact but the bytes, so the fingerprint, differ.
    const std::string widened = Split(half_source, stages, "f16_widened", {DType::kF32});
    REQUIRE(FingerprintOf(widened + "/stage-0", {0, 2}) != FingerprintOf(half_source, {0, 2}));
    auto a = LoadOk(kept + "/stage-0", kBlocksOnly({0, 2}));
    auto b = LoadOk(widened + "/stage-0", kBlocksOnly({0, 2}));
    REQUIRE(WeightsAsFloat(a->block(1).qkv_weight) == WeightsAsFloat(b->block(1).qkv_weight));
  }
}

TEST_CASE("a broken shard folder is named in one line", "[shard]") {
  TinyModel tiny;
  const std::string out = Split(tiny.Write("broken_source"), {{0, 2}, {2, 4}}, "broken_out");
  const std::string stage = out + "/stage-0";
  const std::string shard_path = stage + "/shard.json";
  const std::string good = ReadText(shard_path);
  auto write_shard_json = [&](const std::string& text) { std::ofstream(shard_path) << text; };
  auto with = [&](const char* key, const nlohmann::json& value) {
    nlohmann::json json = nlohmann::json::parse(good);
    if (value.is_null()) {
      json.erase(key);
    } else {
      json[key] = value;
    }
    return json.dump();
  };
  const LoadOptions nothing = kBlocksOnly({0, 0});

  write_shard_json("{not json");
  REQUIRE_THAT(LoadError(stage, nothing), Catch::Equals(shard_path + ": not valid JSON"));
  write_shard_json("[1, 2]");
  REQUIRE_THAT(LoadError(stage, nothing), Catch::Contains(shard_path + ": expected a JSON object"));
  write_shard_json(with("format", "dgpt-shard-v9"));
  REQUIRE_THAT(LoadError(stage, nothing), Catch::Contains(shard_path + ": \"format\" must be"));
  write_shard_json(with("format", nullptr));
  REQUIRE_THAT(LoadError(stage, nothing), Catch::Contains("\"format\" must be"));
  for (const nlohmann::json& layers :
       {nlohmann::json{0, 5}, nlohmann::json{2, 1}, nlohmann::json{-1, 2}, nlohmann::json{0},
        nlohmann::json("0:2"), nlohmann::json{0.5, 2}}) {
    write_shard_json(with("layers", layers));
    REQUIRE_THAT(LoadError(stage, nothing),
                 Catch::Contains(shard_path + ": \"layers\" must be [BEGIN, END]"));
  }
  write_shard_json(with("has_head", "no"));
  REQUIRE_THAT(LoadError(stage, nothing),
               Catch::Contains(shard_path + ": \"has_head\" must be true or false"));
  write_shard_json(with("has_embeddings", nullptr));
  REQUIRE_THAT(LoadError(stage, nothing), Catch::Contains("missing \"has_embeddings\""));
  write_shard_json(with("fingerprint", "abc"));
  REQUIRE_THAT(LoadError(stage, nothing), Catch::Contains("must be 64 hex digits"));
  write_shard_json(with("source", 7));
  REQUIRE_THAT(LoadError(stage, nothing), Catch::Contains("\"source\" must be a string"));
  write_shard_json(with("layers", {0, 0}));
  REQUIRE_THAT(LoadError(stage, nothing), Catch::Contains("holds no layers, embeddings or head"));

  // The file holds blocks 0 and 1: saying 0:1 leaves block 1 outside, saying 0:3 misses block 2.
  write_shard_json(with("layers", {0, 1}));
  REQUIRE_THAT(LoadError(stage, nothing), Catch::Contains("belongs to block 1 but " + shard_path +
                                                          " says the shard holds layers 0:1"));
  write_shard_json(with("layers", {0, 3}));
  REQUIRE_THAT(LoadError(stage, nothing), Catch::Contains("missing tensor transformer.h.2."));
  write_shard_json(with("has_embeddings", true));
  REQUIRE_THAT(LoadError(stage, nothing), Catch::Contains("missing tensor transformer.wte.weight"));

  // Optional fields may be absent.
  write_shard_json(with("fingerprint", nullptr));
  REQUIRE(LoadOk(stage, nothing)->shard()->fingerprint.empty());
}

TEST_CASE("WriteShards refuses bad stage lists, shards and missing sources", "[shard]") {
  TinyModel tiny;
  const std::string source = tiny.Write("refuse_source");
  const std::string out = TempDir("refuse_out");
  Status gap = WriteShards(source, {{0, 1}, {2, 4}}, out, {});
  REQUIRE_FALSE(gap.ok());
  REQUIRE_THAT(gap.message(), Catch::Equals("stage list 0:1,2:4 leaves layer 1 uncovered"));
  Status empty = WriteShards(source, {}, out, {});
  REQUIRE_FALSE(empty.ok());
  REQUIRE_THAT(empty.message(), Catch::Contains("leaves layers 0:4 uncovered"));
  Status integer = WriteShards(source, {{0, 4}}, out, {DType::kI32});
  REQUIRE_FALSE(integer.ok());
  REQUIRE_THAT(integer.message(), Catch::Contains("cannot convert weights to I32"));
  Status missing = WriteShards(source + "/nope", {{0, 4}}, out, {});
  REQUIRE_FALSE(missing.ok());
  REQUIRE_THAT(missing.message(), Catch::Contains("config.json: cannot open"));
  REQUIRE_FALSE(fs::exists(out + "/manifest.json"));

  const std::string split = Split(source, {{0, 4}}, "refuse_split");
  Status of_shard = WriteShards(split + "/stage-0", {{0, 4}}, out, {});
  REQUIRE_FALSE(of_shard.ok());
  REQUIRE_THAT(of_shard.message(), Catch::Contains("is already a shard"));

  // Splitting again into the same folder replaces what was there.
  Status again = WriteShards(source, {{0, 2}, {2, 4}}, split, {});
  REQUIRE(again.ok());
  REQUIRE(ReadJson(split + "/manifest.json")["stages"].size() == 2);
  REQUIRE(LoadOk(split + "/stage-0", kBlocksOnly({0, 0}))->held_layers() == LayerRange{0, 2});
}
