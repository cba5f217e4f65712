// Loading Hugging Face GPT-2 checkpoints: naming variants, dtypes, partial loads, and every way
// a checkpoint can disagree with its config.
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <thread>

#include "engine/checkpoint.h"
#include "engine/thread_pool.h"
#include "engine/transformer.h"
#include "tests/unit/gpt2_test_shapes.h"
#include "tests/unit/weight_test_util.h"

using namespace dgpt;
namespace fs = std::filesystem;

namespace {

// A tiny GPT-2 checkpoint assembled in memory, so each test can break one thing about it.
struct TinyCheckpoint {
  int n_layer = 2, n_head = 2, n_embd = 8, n_positions = 16, vocab_size = 11;
  std::string prefix = "transformer.";
  DType dtype = DType::kF32;
  std::map<std::string, std::vector<int64_t>> shapes;
  nlohmann::json config;

  TinyCheckpoint() {
    shapes = testing::Gpt2TensorShapes(n_layer, n_embd, vocab_size, n_positions, "");
    config = {{"n_layer", n_layer},
              {"n_head", n_head},
              {"n_embd", n_embd},
              {"n_positions", n_positions},
              {"vocab_size", vocab_size},
              {"layer_norm_epsilon", 1e-5},
              {"activation_function", "gelu_new"}};
  }

  // Writes the folder; tensor element i of every tensor holds i * 0.5 (exact in f16/bf16).
  std::string Write(const std::string& name) const {
    const std::string dir =
        std::string(DGPT_TEST_TMP) + "/checkpoint_" + name + "_" + std::to_string(::getpid());
    fs::create_directories(dir);
    std::ofstream(dir + "/config.json") << config.dump();
    std::vector<std::vector<uint8_t>> buffers;
    std::vector<TensorToWrite> tensors;
    for (const auto& [tensor_name, shape] : shapes) {
      int64_t count = 1;
      for (int64_t d : shape) count *= d;
      std::vector<uint8_t> bytes(count * DTypeSize(dtype));
      for (int64_t i = 0; i < count; ++i) {
        const float value = 0.5f * static_cast<float>(i % 64);
        uint32_t bits;
        std::memcpy(&bits, &value, 4);
        if (dtype == DType::kF32) {
          std::memcpy(&bytes[4 * i], &value, 4);
        } else if (dtype == DType::kBF16) {
          const uint16_t half = bits >> 16;
          std::memcpy(&bytes[2 * i], &half, 2);
        } else if (dtype == DType::kF16) {
          // value = k/2 with k < 64: exact in binary16.
          uint16_t half = 0;
          if (value != 0.0f) {
            int exponent;
            const float mantissa = std::frexp(value, &exponent);  // value = m * 2^e, m in [.5,1)
            half = static_cast<uint16_t>(((exponent - 1 + 15) << 10) |
                                         static_cast<uint16_t>((mantissa * 2 - 1) * 1024));
          }
          std::memcpy(&bytes[2 * i], &half, 2);
        } else {
          for (size_t b = 0; b < DTypeSize(dtype); ++b) bytes[i * DTypeSize(dtype) + b] = 0;
        }
      }
      buffers.push_back(std::move(bytes));
      const std::string full_name =
          tensor_name.starts_with("lm_head") ? tensor_name : prefix + tensor_name;
      tensors.push_back({full_name, dtype, shape, buffers.back().data(), buffers.back().size()});
    }
    Status status = WriteSafetensors(dir + "/model.safetensors", tensors);
    REQUIRE(status.ok());
    return dir;
  }
};

std::string LoadError(const std::string& dir, const LoadOptions& options = {}) {
  auto loaded = Checkpoint::Load(dir, options);
  REQUIRE_FALSE(loaded.ok());
  const std::string message = loaded.status().message();
  REQUIRE(message.find('\n') == std::string::npos);  // one line
  return message;
}

}  // namespace

TEST_CASE("a complete checkpoint loads, with the head tied to wte", "[checkpoint]") {
  for (const std::string prefix : {"transformer.", ""}) {
    TinyCheckpoint tiny;
    tiny.prefix = prefix;
    auto model = Checkpoint::Load(tiny.Write(prefix.empty() ? "noprefix" : "prefix"));
    REQUIRE(model.ok());
    const Checkpoint& m = *model.value();
    REQUIRE(m.config().n_layer == 2);
    REQUIRE(m.layers() == LayerRange{0, 2});
    REQUIRE(m.lm_head().data == m.token_embedding().data);
    // Conv1D stores [in, out]: flat index 3 is input 0 of output 3, packed as row 3, column 0.
    REQUIRE(WeightAt(m.block(1).mlp_proj_weight, 3, 0) == 1.5f);
  }
}

TEST_CASE("an explicit lm_head.weight is used instead of wte", "[checkpoint]") {
  TinyCheckpoint tiny;
  tiny.shapes["lm_head.weight"] = {tiny.vocab_size, tiny.n_embd};
  auto model = Checkpoint::Load(tiny.Write("lm_head"));
  REQUIRE(model.ok());
  REQUIRE(model.value()->lm_head().data != model.value()->token_embedding().data);
}

TEST_CASE("attention mask buffers are ignored", "[checkpoint]") {
  TinyCheckpoint tiny;
  tiny.shapes["h.0.attn.bias"] = {1, 1, tiny.n_positions, tiny.n_positions};
  REQUIRE(Checkpoint::Load(tiny.Write("attn_bias")).ok());
}

TEST_CASE("F16 and BF16 checkpoints are widened exactly", "[checkpoint]") {
  for (DType dtype : {DType::kF16, DType::kBF16}) {
    TinyCheckpoint tiny;
    tiny.dtype = dtype;
    auto model = Checkpoint::Load(tiny.Write(std::string(DTypeName(dtype))));
    REQUIRE(model.ok());
    REQUIRE(model.value()->weight_dtype() == dtype);
    const WeightMatrix& w = model.value()->block(0).fc_weight;  // stored [C = 8, 4C = 32]
    REQUIRE(w.format == (dtype == DType::kF16 ? WeightFormat::kF16 : WeightFormat::kF32));
    for (int i = 0; i < 4 * 8 * 8; ++i) REQUIRE(WeightAt(w, i % 32, i / 32) == 0.5f * (i % 64));
  }
}

TEST_CASE("half and bfloat16 conversions", "[checkpoint]") {
  REQUIRE(HalfToFloat(0x3c00) == 1.0f);
  REQUIRE(HalfToFloat(0xc000) == -2.0f);
  REQUIRE(HalfToFloat(0x7bff) == 65504.0f);
  REQUIRE(HalfToFloat(0x0001) == std::ldexp(1.0f, -24));  // smallest subnormal
  REQUIRE(HalfToFloat(0x8000) == 0.0f);
  REQUIRE(std::signbit(HalfToFloat(0x8000)));
  REQUIRE(std::isinf(HalfToFloat(0x7c00)));
  REQUIRE(std::isnan(HalfToFloat(0x7e00)));
  REQUIRE(BFloat16ToFloat(0x3f80) == 1.0f);
  REQUIRE(BFloat16ToFloat(0xc040) == -3.0f);
}

TEST_CASE("a partial load maps only what it is asked for", "[checkpoint]") {
  TinyCheckpoint tiny;
  auto model = Checkpoint::Load(tiny.Write("partial"),
                                LoadOptions{.layers = {1, 2}, .embeddings = false, .head = false});
  REQUIRE(model.ok());
  REQUIRE(model.value()->layers() == LayerRange{1, 2});
  REQUIRE_FALSE(model.value()->token_embedding());
  REQUIRE_FALSE(model.value()->lm_head());
  REQUIRE(model.value()->block(1).ln1_weight != nullptr);
  REQUIRE_THAT(LoadError(tiny.Write("partial_bad"), LoadOptions{.layers = {1, 3}}),
               Catch::Contains("layer range 1:3 is outside the model's 2 layers"));
}

TEST_CASE("a missing tensor is named", "[checkpoint]") {
  TinyCheckpoint tiny;
  tiny.shapes.erase("h.1.mlp.c_fc.bias");
  REQUIRE_THAT(LoadError(tiny.Write("missing")),
               Catch::Contains("missing tensor transformer.h.1.mlp.c_fc.bias"));
  TinyCheckpoint no_wte;
  no_wte.shapes.erase("wte.weight");
  REQUIRE_THAT(LoadError(no_wte.Write("missing_wte")),
               Catch::Contains("missing tensor wte.weight"));
}

TEST_CASE("a tensor whose shape disagrees with the config is named with both shapes",
          "[checkpoint]") {
  TinyCheckpoint tiny;
  tiny.shapes["h.0.attn.c_attn.weight"] = {8, 16};
  const std::string error = LoadError(tiny.Write("shape"));
  REQUIRE_THAT(error, Catch::Contains("h.0.attn.c_attn.weight has shape [8, 16]"));
  REQUIRE_THAT(error, Catch::Contains("implies [8, 24]"));
}

TEST_CASE("config inconsistent with the tensors", "[checkpoint]") {
  SECTION("vocab_size") {
    TinyCheckpoint tiny;
    tiny.config["vocab_size"] = 12;
    REQUIRE_THAT(LoadError(tiny.Write("vocab")), Catch::Contains("wte.weight has shape [11, 8]"));
  }
  SECTION("more blocks in the file than n_layer") {
    TinyCheckpoint tiny;
    tiny.config["n_layer"] = 1;
    REQUIRE_THAT(LoadError(tiny.Write("layers")),
                 Catch::Contains("belongs to block 1 but config.json has n_layer 1"));
  }
  SECTION("fewer blocks in the file than n_layer") {
    TinyCheckpoint tiny;
    tiny.config["n_layer"] = 3;
    REQUIRE_THAT(LoadError(tiny.Write("layers3")), Catch::Contains("missing tensor"));
  }
}

TEST_CASE("weights of a non-float dtype are refused", "[checkpoint]") {
  TinyCheckpoint tiny;
  tiny.dtype = DType::kI32;
  REQUIRE_THAT(LoadError(tiny.Write("int")), Catch::Contains("has dtype I32; weights must be F32"));
}

TEST_CASE("bad config.json files", "[checkpoint]") {
  TinyCheckpoint tiny;
  const std::string dir = tiny.Write("config");
  auto write_config = [&](const std::string& text) { std::ofstream(dir + "/config.json") << text; };
  write_config("{not json");
  REQUIRE_THAT(LoadError(dir), Catch::Contains("config.json: not valid JSON"));
  write_config(R"({"n_layer": 2, "n_head": 2, "n_embd": 8, "vocab_size": 11})");
  REQUIRE_THAT(LoadError(dir), Catch::Contains("missing \"n_ctx\""));
  write_config(R"({"n_layer": 2, "n_head": 3, "n_embd": 8, "n_positions": 16, "vocab_size": 11})");
  REQUIRE_THAT(LoadError(dir), Catch::Contains("not divisible by n_head"));
  write_config(
      R"({"n_layer": "2", "n_head": 2, "n_embd": 8, "n_positions": 16, "vocab_size": 11})");
  REQUIRE_THAT(LoadError(dir), Catch::Contains("\"n_layer\" must be a positive integer"));
  write_config(R"({"n_layer": 2, "n_head": 2, "n_embd": 8, "n_positions": 16, "vocab_size": 11,
                   "activation_function": "relu"})");
  REQUIRE_THAT(LoadError(dir), Catch::Contains("unsupported activation_function \"relu\""));
  fs::remove(dir + "/config.json");
  REQUIRE_THAT(LoadError(dir), Catch::Contains("config.json: cannot open"));
}

TEST_CASE("a missing model.safetensors is named", "[checkpoint]") {
  TinyCheckpoint tiny;
  const std::string dir = tiny.Write("nofile");
  fs::remove(dir + "/model.safetensors");
  REQUIRE_THAT(LoadError(dir), Catch::Contains("model.safetensors"));
}

TEST_CASE("batched logits from many threads equal one-at-a-time logits bit for bit",
          "[checkpoint][batch]") {
  TinyCheckpoint tiny;
  auto model = Checkpoint::Load(tiny.Write("batcher"));
  REQUIRE(model.ok());
  const int C = tiny.n_embd, V = tiny.vocab_size, kThreads = 6, kSteps = 50;
  ThreadPool pool(2);
  LogitsBatcher batcher(*model.value(), pool, /*max_batch=*/4);
  std::vector<std::vector<float>> got(kThreads * kSteps, std::vector<float>(V));
  std::vector<std::vector<float>> inputs(kThreads * kSteps, std::vector<float>(C));
  for (size_t i = 0; i < inputs.size(); ++i) {
    for (int c = 0; c < C; ++c) inputs[i][c] = std::sin(0.37f * i + 1.3f * c);
  }
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int s = 0; s < kSteps; ++s) {
        batcher.Compute(got[t * kSteps + s].data(), inputs[t * kSteps + s].data());
      }
    });
  }
  for (auto& thread : threads) thread.join();
  std::vector<float> expected(V), normed(C);
  ThreadPool one(1);
  for (size_t i = 0; i < inputs.size(); ++i) {
    ComputeLogits(expected.data(), inputs[i].data(), *model.value(), normed.data(), one);
    REQUIRE(got[i] == expected);
  }
}
