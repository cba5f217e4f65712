// Weight matrices as the kernels read them: one output per row (W[rows = out, cols = in]) in
// f32, f16 or q8_0, packed at load from a checkpoint's tensors. Hugging Face GPT-2 stores its
// Conv1D weights [in, out], so those are transposed on the way in; wte / lm_head are already
// [V, C] and can be used in place when their format is kept.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "engine/kernels/kernels.h"
#include "engine/safetensors.h"
#include "engine/status.h"

namespace dgpt {

struct WeightMatrix {
  WeightFormat format = WeightFormat::kF32;
  int64_t rows = 0;  // outputs
  int64_t cols = 0;  // inputs: the reduction runs along a row
  const std::byte* data = nullptr;

  int64_t row_bytes() const { return WeightRowBytes(format, cols); }
  int64_t bytes() const { return rows * row_bytes(); }
  const std::byte* row(int64_t r) const { return data + r * row_bytes(); }
  explicit operator bool() const { return data != nullptr; }
};

// A q8_0 matrix is stored in a safetensors file as U8 [rows, cols / 32, 34]: the packed blocks
// themselves, already one output per row (what `dgpt split --dtype q8_0` writes).
inline constexpr int64_t kQ8BlockBytes = sizeof(BlockQ8_0);
bool IsPackedQ8Tensor(const TensorInfo& info);

// A tensor as stored, seen as the matrix [rows, cols] (rows = outputs): `transposed` when the
// stored tensor is [cols, rows] (Conv1D). F32, F16, BF16, or packed q8_0 (never transposed).
struct MatrixSource {
  const std::byte* data = nullptr;
  DType dtype = DType::kF32;
  int64_t rows = 0;
  int64_t cols = 0;
  bool transposed = false;
};

// 64-byte aligned owned storage for packed matrices.
struct AlignedFree {
  void operator()(std::byte* p) const;
};
using AlignedBytes = std::unique_ptr<std::byte[], AlignedFree>;
AlignedBytes AllocateAligned(size_t bytes);

// The matrix in `format`: points into the source when nothing needs converting (same format,
// not transposed), otherwise packs into *storage. Errors: q8_0 with cols % 32 != 0, a source
// dtype that is not a float or packed q8_0.
Result<WeightMatrix> PackMatrix(const MatrixSource& source, WeightFormat format,
                                AlignedBytes* storage);

// Widens row r of w into out[w.cols].
void WeightRowToFloat(float* out, const WeightMatrix& w, int64_t r);

}  // namespace dgpt
