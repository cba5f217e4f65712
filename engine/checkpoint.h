// GPT-2 weights as the engine computes with them. The checkpoint is memory-mapped; its weight
// matrices (each block's four, wte, lm_head) are packed at load into one arena in the kernels'
// layout (one output per row) and the chosen format (f32, f16 or q8_0), and the copied-out pages
// of the mapping are released. LayerNorm parameters, biases and wpe are float views into the
// mapping (F16/BF16 ones widened into owned buffers).
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

#include "base/status.h"
#include "engine/config.h"
#include "engine/kernels/kernels.h"
#include "engine/safetensors.h"
#include "engine/weights.h"

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
  WeightMatrix qkv_weight;        // [3C rows, C cols]
  const float* qkv_bias;          // [3C]
  WeightMatrix attn_proj_weight;  // [C, C]
  const float* attn_proj_bias;    // [C]
  const float* ln2_weight;        // [C]
  const float* ln2_bias;          // [C]
  WeightMatrix fc_weight;         // [4C rows, C cols]
  const float* fc_bias;           // [4C]
  WeightMatrix mlp_proj_weight;   // [C rows, 4C cols]
  const float* mlp_proj_bias;     // [C]
};

// Whether a tensor (name with or without "transformer.") is a weight matrix — a block's four,
// wte, lm_head — which may be stored as packed q8_0, and whether it is stored transposed
// relative to the kernels' one-output-per-row layout (Conv1D weights are [in, out]).
struct MatrixLayout {
  bool is_matrix = false;
  bool transposed = false;
};
MatrixLayout WeightMatrixLayout(std::string_view name);

// Which parts of the model a process needs: a coordinator needs the embeddings and the head,
// a pipeline stage only its blocks. Only those tensors' pages are ever read.
struct LoadOptions {
  LayerRange layers{0, -1};  // end -1 means "to the last layer"
  bool embeddings = true;    // wte + wpe
  bool head = true;          // ln_f + lm_head (tied to wte when the checkpoint has none)
  // Format of the blocks' matrices; unset keeps what the file stores (F32 and BF16 -> f32,
  // F16 -> f16, packed q8_0 -> q8_0).
  std::optional<WeightFormat> weight_format = std::nullopt;
  // Format of the LM head (and of wte when the head is tied to it); unset follows
  // weight_format, or what the file stores.
  std::optional<WeightFormat> head_format = std::nullopt;
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

  // REQUIRES: loaded with embeddings (or a head tied to wte).
  const WeightMatrix& token_embedding() const { return wte_; }  // [V, C]
  const float* position_embedding() const { return wpe_; }      // [P, C]
  // REQUIRES: loaded with head.
  const float* final_norm_weight() const { return ln_f_weight_; }  // [C]
  const float* final_norm_bias() const { return ln_f_bias_; }      // [C]
  const WeightMatrix& lm_head() const { return lm_head_; }         // [V rows, C cols]

  const SafetensorsFile& file() const { return *file_; }
  // The dtype the file stores the weights in (U8 for packed q8_0), and the format the loaded
  // blocks compute in (the head's when no block is loaded).
  DType weight_dtype() const { return weight_dtype_; }
  WeightFormat weight_format() const { return weight_format_; }
  // Bytes of the loaded blocks' four matrices: what one decode step reads per layer range.
  int64_t block_matrix_bytes() const;
  // Bytes of every packed matrix held (blocks, wte, lm_head).
  int64_t matrix_bytes() const { return arena_bytes_; }
  const std::string& dir() const { return dir_; }
  // "transformer." or "": what the file's tensor names (other than lm_head.weight) start with.
  const std::string& tensor_prefix() const { return prefix_; }

 private:
  Checkpoint() = default;
  Result<const float*> Map(const std::string& name);
  // A matrix to pack: tensor `name` seen as [rows, cols] (`transposed`: stored [cols, rows]),
  // into `format` (unset: as stored).
  struct PackJob {
    WeightMatrix* target;
    std::string name;
    int64_t rows;
    int64_t cols;
    bool transposed;
    std::optional<WeightFormat> format;
  };
  // Packs them all into one arena (so a huge-page mapping wastes at most one page).
  Status PackAll(const std::vector<PackJob>& jobs);

  std::string dir_;
  ModelConfig config_;
  LayerRange layers_;
  std::optional<ShardInfo> shard_;
  std::unique_ptr<SafetensorsFile> file_;
  DType weight_dtype_ = DType::kF32;
  std::string prefix_;  // "transformer." or ""
  std::vector<BlockWeights> blocks_;
  std::vector<std::unique_ptr<float[]>> widened_;  // owned F32 copies of F16/BF16 tensors
  AlignedBytes arena_;                             // every packed matrix
  int64_t arena_bytes_ = 0;
  WeightFormat weight_format_ = WeightFormat::kF32;
  WeightMatrix wte_;
  const float* wpe_ = nullptr;
  const float* ln_f_weight_ = nullptr;
  const float* ln_f_bias_ = nullptr;
  WeightMatrix lm_head_;
};

}  // namespace dgpt
