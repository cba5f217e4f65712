// Reading single weights back out of packed matrices, for tests.
#pragma once

#include <vector>

#include "engine/weights.h"

namespace dgpt {

// The weight at (row = output, col = input), widened to float.
inline float WeightAt(const WeightMatrix& w, int64_t row, int64_t col) {
  std::vector<float> values(static_cast<size_t>(w.cols));
  WeightRowToFloat(values.data(), w, row);
  return values[static_cast<size_t>(col)];
}

// The whole matrix widened, row after row.
inline std::vector<float> WeightsAsFloat(const WeightMatrix& w) {
  std::vector<float> values(static_cast<size_t>(w.rows * w.cols));
  for (int64_t r = 0; r < w.rows; ++r) WeightRowToFloat(values.data() + r * w.cols, w, r);
  return values;
}

}  // namespace dgpt
