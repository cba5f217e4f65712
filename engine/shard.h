// `dgpt split`: cutting a full checkpoint into per-stage folders, so each machine of a pipeline
// stores and reads only its own layers. Layout of OUT_DIR:
//   stage-K/      config.json (the full model's), model.safetensors (only blocks [a, b)),
//                 shard.json {"format": "dgpt-shard-v1", "layers": [a, b], "has_embeddings":
//                 false, "has_head": false, "fingerprint": hex, "source": DIR}
//   coordinator/  config.json, model.safetensors (wte, wpe, ln_f, lm_head.weight if any),
//                 the tokenizer files, shard.json with "layers": [0, 0] and embeddings + head
//   manifest.json {"format": "dgpt-split-v1", "config": {...}, "dtype": "F16",
//                  "stages": [{"dir", "layers", "fingerprint", "bytes", "sha256"}...],
//                  "coordinator": {"dir", "bytes", "sha256"}}
// Every shard loads with Checkpoint::Load, and a stage's fingerprint equals the full
// checkpoint's for the same layers (when the dtype is kept).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "engine/checkpoint.h"
#include "engine/safetensors.h"

namespace dgpt {

inline constexpr std::string_view kSplitManifestFormat = "dgpt-split-v1";

// "0:4,4:8,8:12" (BEGIN:END per stage, in layer order) or "auto:N" (N even stages, earlier ones
// taking the extra layers). The stages must cover [0, n_layer) without gaps or overlaps.
// Errors are one line quoting the spec, e.g. "--stages 0:4,5:12 leaves layer 4 uncovered".
Result<std::vector<LayerRange>> ParseStages(std::string_view spec, int n_layer);

// Checks that `stages` cover [0, n_layer) in order, each non-empty, without gaps or overlaps.
Status CheckStagesCoverModel(const std::vector<LayerRange>& stages, int n_layer);

// What the shards store. `dtype` (F32, F16 or BF16) converts every tensor, rounding to nearest
// even; nullopt keeps the source's bytes. `q8_0` stores the weight matrices (each block's four,
// wte, lm_head) as packed q8_0 instead (U8 [rows, cols / 32, 34], one output per row, see
// engine/weights.h); the manifest's "dtype" is then "Q8_0".
struct ShardFormat {
  std::optional<DType> dtype;
  bool q8_0 = false;
};

// Writes the layout above from the full checkpoint in `model_dir`. Files are written
// atomically; an existing OUT_DIR is written into (same-named files are replaced).
Status WriteShards(const std::string& model_dir, const std::vector<LayerRange>& stages,
                   const std::string& out_dir, const ShardFormat& format);

}  // namespace dgpt
