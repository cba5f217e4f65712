// Weight matrices as the kernels read them: one output per row (W[rows = out, cols = in]) in
// f32, f16 or q8_0, packed at load from a checkpoint's tensors. Hugging Face GPT-2 stores its
// Conv1D weights [in, out], so those are transposed on the way in; wte / lm_head are already
// [V, C].
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "base/status.h"
#include "engine/kernels/kernels.h"
#include "engine/safetensors.h"

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

// Owned storage for packed matrices (null when allocation failed).
struct AlignedFree {
  void operator()(std::byte* p) const;
};
using AlignedBytes = std::unique_ptr<std::byte[], AlignedFree>;
// 64-byte aligned.
AlignedBytes AllocateAligned(size_t bytes);
// For the weights that decode streams from memory: 2 MiB aligned and backed by transparent huge
// pages where the kernel allows (MADV_HUGEPAGE). Measured on the development machine, one
// thread's GEMV reads 24 GB/s from huge pages but 16.5 GB/s from 4 KiB pages (the hardware
// prefetcher stops at every 4 KiB page boundary; docs/PERFORMANCE.md).
AlignedBytes AllocateWeightArena(size_t bytes);

int64_t PackedMatrixBytes(WeightFormat format, int64_t rows, int64_t cols);

// Packs the source into `out` (PackedMatrixBytes(format, rows, cols) bytes, 2-byte aligned or
// better). Errors: q8_0 with cols % 32 != 0, a source dtype that is not a float or packed q8_0.
Result<WeightMatrix> PackMatrixInto(const MatrixSource& source, WeightFormat format,
                                    std::byte* out);
// The same into newly allocated *storage.
Result<WeightMatrix> PackMatrix(const MatrixSource& source, WeightFormat format,
                                AlignedBytes* storage);

// The format a matrix stored in `dtype` computes in when none is asked for: F16 -> f16, U8
// (packed q8_0) -> q8_0, F32 and BF16 -> f32.
WeightFormat FormatAsStored(DType dtype);

// Element `index` of a stored F32, F16 or BF16 tensor, as float (exact).
float ReadFloatElement(const std::byte* data, DType dtype, int64_t index);

// Widens row r of w into out[w.cols].
void WeightRowToFloat(float* out, const WeightMatrix& w, int64_t r);

}  // namespace dgpt
