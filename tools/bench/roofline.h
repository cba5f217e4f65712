// The memory roofline of a decode step: a GPT-2 decode step multiplies one row of activations
// by every weight matrix, so it must read all of a stage's weights once; the fastest it can go
// is weight bytes / memory bandwidth. `dgpt bench` compares what a stage achieves with that.
#pragma once

#include <cstdint>

#include "engine/config.h"
#include "engine/kernels/kernels.h"

namespace dgpt::bench {

// Bytes of weights one decode step reads: for each of `layers` transformer blocks its four
// matrices (qkv C x 3C, attention projection C x C, MLP C x 4C and 4C x C: 12*C*C weights) in
// `format`, plus its biases and layer norms (13*C floats); with `lm_head` also the final norm
// and the V x C LM head in `format`, plus the token's two embedding rows (2*C floats). The KV
// cache is not counted (it is not weights, and small next to them at GPT-2's context).
int64_t DecodeWeightBytes(const ModelConfig& config, int layers, WeightFormat format, bool lm_head);

struct Roofline {
  double achieved_gbs = 0;      // weight bytes per step / compute seconds per step, in 1e9 B/s
  double roofline_percent = 0;  // achieved / bandwidth * 100; 0 when either is unknown
};

// `bytes_per_step` read in `seconds_per_step` against `bandwidth_gbs` (1e9 bytes/s). With B
// rows batched into a step, bytes and seconds per token are both divided by B, so the ratio is
// the same per step or per token.
Roofline ComputeRoofline(double bytes_per_step, double seconds_per_step, double bandwidth_gbs);

}  // namespace dgpt::bench
