// `dgpt bench --membw`: this machine's memory bandwidth for streaming reads — the ceiling of a
// memory-bound decode step. Several threads each sum their own slice of a buffer much larger
// than the last-level cache (allocated like the engine's weights); the best of several runs is
// the figure.
#pragma once

#include <cstdint>
#include <memory>

#include "base/status.h"
#include "engine/weights.h"

namespace dgpt::bench {

// Size of the largest CPU cache (from /sys, else sysconf); 0 when unknown.
int64_t LastLevelCacheBytes();

// 8 times the last-level cache, at least 256 MiB: large enough that no run is served by a cache.
int64_t DefaultBandwidthBufferBytes();

class BandwidthMeter {
 public:
  // Allocates and touches `buffer_bytes` (an error when the memory is not there).
  static Result<std::unique_ptr<BandwidthMeter>> Create(int64_t buffer_bytes);

  // Best of at least `runs` full reads of the buffer by `threads` threads, in GB/s (1e9
  // bytes/s). Runs go on for at least `min_seconds`, so that on a shared machine a short
  // burst of someone else's work does not spoil every run.
  double Measure(int threads, int runs, double min_seconds = 0.5);
  int64_t buffer_bytes() const { return static_cast<int64_t>(words_ * sizeof(uint64_t)); }

 private:
  BandwidthMeter(AlignedBytes data, size_t words) : data_(std::move(data)), words_(words) {}
  uint64_t* words() const { return reinterpret_cast<uint64_t*>(data_.get()); }

  // Allocated as the engine allocates its weights (huge pages where the kernel allows), so the
  // roofline compares like with like.
  AlignedBytes data_;
  size_t words_;
};

}  // namespace dgpt::bench
