// GPT-2 weights as the engine computes with them: float32 views into a memory-mapped
// Hugging Face checkpoint (zero-copy for F32; F16/BF16 tensors are widened into owned buffers).
// Shape letters: C = n_embd, V = vocab_size, P = n_positions. Conv1D weights are stored
// [in, out] row-major, exactly as GPT2LMHeadModel saves them.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "engine/config.h"
#include "engine/safetensors.h"
#include "engine/status.h"

namespace dgpt {

// A contiguous range of transformer blocks [begin, end): the unit a pipeline stage runs.
struct LayerRange {
  int begin = 0;
  int end = 0;
  int size() const { return end - begin; }
  bool contains(int layer) const { return layer >= begin && layer < end; }
  bool operator==(const LayerRange&) const = default;
};

// The tensors of one transformer block, in GPT-2's order, without the "h.N." prefix. Shards and
// fingerprints list a block's tensors in exactly this order.
inline constexpr std::array<std::string_view, 12> kBlockTensorNames = {
    "ln_1.weight",        "ln_1.bias",        "attn.c_attn.weight", "attn.c_attn.bias",
    "attn.c_proj.weight", "attn.c_proj.bias", "ln_2.weight",        "ln_2.bias",
    "mlp.c_fc.weight",    "mlp.c_fc.bias",    "mlp.c_proj.weight",  "mlp.c_proj.bias"};

struct BlockWeights {
  const float* ln1_weight;        // [C]
  const float* ln1_bias;          // [C]
  const float* qkv_weight;        // [C, 3C]
  const float* qkv_bias;          // [3C]
  const float* attn_proj_weight;  // [C, C]
  const float* attn_proj_bias;    // [C]
  const float* ln2_weight;        // [C]
  const float* ln2_bias;          // [C]
  const float* fc_weight;         // [C, 4C]
  const float* fc_bias;           // [4C]
  const float* mlp_proj_weight;   // [4C, C]
  const float* mlp_proj_bias;     // [C]
};

// Which parts of the model a process needs: a coordinator needs the embeddings and the head,
// a pipeline stage only its blocks. Only those tensors' pages are ever read.
struct LoadOptions {
  LayerRange layers{0, -1};  // end -1 means "to the last layer"
  bool embeddings = true;    // wte + wpe
  bool head = true;          // ln_f + lm_head (tied to wte when the checkpoint has none)
};

// A folder written by `dgpt split` holds part of a model and says which in DIR/shard.json:
// {"format": "dgpt-shard-v1", "layers": [a, b], "has_embeddings": bool, "has_head": bool,
//  "fingerprint": "<hex>", "source": "<folder it was split from>"}.
inline constexpr std::string_view kShardFileName = "shard.json";
inline constexpr std::string_view kShardFormat = "dgpt-shard-v1";

struct ShardInfo {
  LayerRange layers;            // the blocks the shard holds
  bool has_embeddings = false;  // wte + wpe
  bool has_head = false;        // ln_f (+ lm_head.weight, or wte to tie it to)
  std::string fingerprint;      // hex StageFingerprint recorded when written ("" if absent)
  std::string source;           // "" if absent
};

// Reads DIR/shard.json; nullopt when there is none (DIR is a full checkpoint). Errors name the
// file: bad JSON, wrong format, layers outside the config's n_layer, mistyped fields.
Result<std::optional<ShardInfo>> ReadShardInfo(const std::string& dir, const ModelConfig& config);

class Checkpoint {
 public:
  // Opens DIR/config.json + DIR/model.safetensors, checks every tensor the folder holds against
  // the config (presence, shape, dtype), then maps the requested parts. A full checkpoint holds
  // the whole model; a shard (DIR/shard.json) only its parts, and requesting others is an error.
  static Result<std::unique_ptr<Checkpoint>> Load(const std::string& dir,
                                                  const LoadOptions& options = {});

  const ModelConfig& config() const { return config_; }
  // The mapped blocks (what was requested).
  LayerRange layers() const { return layers_; }
  // What the folder holds, whatever was mapped: everything for a full checkpoint.
  LayerRange held_layers() const {
    return shard_ ? shard_->layers : LayerRange{0, config_.n_layer};
  }
  bool holds_embeddings() const { return !shard_ || shard_->has_embeddings; }
  bool holds_head() const { return !shard_ || shard_->has_head; }
  // Set when the folder is a shard written by `dgpt split`.
  const std::optional<ShardInfo>& shard() const { return shard_; }
  // REQUIRES: layers().contains(layer)
  const BlockWeights& block(int layer) const { return blocks_[layer - layers_.begin]; }

  // REQUIRES: loaded with embeddings.
  const float* token_embedding() const { return wte_; }     // [V, C]
  const float* position_embedding() const { return wpe_; }  // [P, C]
  // REQUIRES: loaded with head.
  const float* final_norm_weight() const { return ln_f_weight_; }  // [C]
  const float* final_norm_bias() const { return ln_f_bias_; }      // [C]
  const float* lm_head() const { return lm_head_; }                // [V, C]

  const SafetensorsFile& file() const { return *file_; }
  DType weight_dtype() const { return weight_dtype_; }
  const std::string& dir() const { return dir_; }
  // "transformer." or "": what the file's tensor names (other than lm_head.weight) start with.
  const std::string& tensor_prefix() const { return prefix_; }

 private:
  Checkpoint() = default;
  Result<const float*> Map(const std::string& name);

  std::string dir_;
  ModelConfig config_;
  LayerRange layers_;
  std::optional<ShardInfo> shard_;
  std::unique_ptr<SafetensorsFile> file_;
  DType weight_dtype_ = DType::kF32;
  std::string prefix_;  // "transformer." or ""
  std::vector<BlockWeights> blocks_;
  std::vector<std::unique_ptr<float[]>> widened_;  // owned F32 copies of F16/BF16 tensors
  const float* wte_ = nullptr;
  const float* wpe_ = nullptr;
  const float* ln_f_weight_ = nullptr;
  const float* ln_f_bias_ = nullptr;
  const float* lm_head_ = nullptr;
};

// Widening conversions used for F16/BF16 checkpoints (exact: every value is representable).
float HalfToFloat(uint16_t bits);
float BFloat16ToFloat(uint16_t bits);

}  // namespace dgpt
