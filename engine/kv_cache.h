// Keys and values of the positions a sequence has seen, for the blocks of one layer range.
// One KvCache belongs to one sequence on one stage.
#pragma once

#include <memory>
#include <vector>

#include "engine/checkpoint.h"

namespace dgpt {

class KvCache {
 public:
  // Room for `capacity` positions of `layers.size()` blocks of width C.
  KvCache(LayerRange layers, int capacity, int C);

  LayerRange layers() const { return layers_; }
  int capacity() const { return capacity_; }
  // Positions filled so far; the next token goes at this position.
  int length() const { return length_; }
  void set_length(int length) { length_ = length; }
  size_t bytes() const { return storage_.size() * sizeof(float); }

  float* keys(int layer);    // [capacity, C]
  float* values(int layer);  // [capacity, C]

 private:
  LayerRange layers_;
  int capacity_;
  int C_;
  int length_ = 0;
  std::vector<float> storage_;  // [layers, 2, capacity, C]
};

}  // namespace dgpt
