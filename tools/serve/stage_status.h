// What the server knows about one stage of the model: a pipeline worker, or the whole model in
// this process ("local"). Filled by CompletionEngine, shown by /health and /metrics.
#pragma once

#include <cstdint>
#include <string>

namespace dgpt::serve {

struct StageStatus {
  std::string address;  // HOST:PORT, or "local"
  std::string name;
  int layer_begin = 0;
  int layer_end = 0;
  bool up = false;
  double last_latency_ms = 0;  // last control round trip (0 for local)
  // From the stage's STATS; has_stats is false when it could not be asked.
  bool has_stats = false;
  uint32_t sequences_in_use = 0;  // KV slots held
  uint32_t max_sequences = 0;
  uint64_t kv_cache_bytes = 0;
  uint64_t forwards = 0;
  uint64_t tokens = 0;
  double compute_seconds = 0;
  uint64_t weight_bytes = 0;    // the stage's block matrices
  uint64_t resident_bytes = 0;  // the stage process's RSS
};

}  // namespace dgpt::serve
