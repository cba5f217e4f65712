// GPT-2 weights as the engine computes with them: float32 views into a memory-mapped
// Hugging Face checkpoint (zero-copy for F32; F16/BF16 tensors are widened into owned buffers).
// Shape letters: C = n_embd, V = vocab_size, P = n_positions. Conv1D weights are stored
// [in, out] row-major, exactly as GPT2LMHeadModel saves them.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
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

class Checkpoint {
 public:
  // Opens DIR/config.json + DIR/model.safetensors, checks every tensor of the model against the
  // config (presence, shape, dtype), then maps the requested parts.
  static Result<std::unique_ptr<Checkpoint>> Load(const std::string& dir,
                                                  const LoadOptions& options = {});

  const ModelConfig& config() const { return config_; }
  LayerRange layers() const { return layers_; }
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

 private:
  Checkpoint() = default;
  Result<const float*> Map(const std::string& name);

  std::string dir_;
  ModelConfig config_;
  LayerRange layers_;
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
