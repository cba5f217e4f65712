#include "engine/kv_cache.h"

#include <cassert>

namespace dgpt {

KvCache::KvCache(LayerRange layers, int capacity, int C)
    : layers_(layers),
      capacity_(capacity),
      C_(C),
      storage_(static_cast<size_t>(layers.size()) * 2 * capacity * C) {}

float* KvCache::keys(int layer) {
  assert(layers_.contains(layer));
  return storage_.data() + static_cast<size_t>(layer - layers_.begin) * 2 * capacity_ * C_;
}

float* KvCache::values(int layer) {
  return keys(layer) + static_cast<size_t>(capacity_) * C_;
}

}  // namespace dgpt
