#include "engine/weights.h"

#include <fmt/format.h>

#include <sys/mman.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "engine/checkpoint.h"

namespace dgpt {

void AlignedFree::operator()(std::byte* p) const {
  std::free(p);
}

AlignedBytes AllocateAligned(size_t bytes) {
  const size_t rounded = (std::max<size_t>(bytes, 1) + 63) / 64 * 64;
  return AlignedBytes(static_cast<std::byte*>(std::aligned_alloc(64, rounded)));
}

AlignedBytes AllocateWeightArena(size_t bytes) {
  constexpr size_t kHugePage = size_t{2} << 20;
  if (bytes < kHugePage) return AllocateAligned(bytes);
  const size_t rounded = (bytes + kHugePage - 1) / kHugePage * kHugePage;
  void* arena = std::aligned_alloc(kHugePage, rounded);
  if (arena) madvise(arena, rounded, MADV_HUGEPAGE);  // a hint: fine if refused
  return AlignedBytes(static_cast<std::byte*>(arena));
}

int64_t PackedMatrixBytes(WeightFormat format, int64_t rows, int64_t cols) {
  return rows * WeightRowBytes(format, cols);
}

bool IsPackedQ8Tensor(const TensorInfo& info) {
  return info.dtype == DType::kU8 && info.shape.size() == 3 && info.shape[2] == kQ8BlockBytes;
}

WeightFormat FormatAsStored(DType dtype) {
  if (dtype == DType::kU8) return WeightFormat::kQ8_0;
  return dtype == DType::kF16 ? WeightFormat::kF16 : WeightFormat::kF32;
}

float ReadFloatElement(const std::byte* data, DType dtype, int64_t index) {
  if (dtype == DType::kF32) {
    float value;
    std::memcpy(&value, data + 4 * index, sizeof(value));
    return value;
  }
  uint16_t bits;
  std::memcpy(&bits, data + 2 * index, sizeof(bits));
  return dtype == DType::kF16 ? HalfToFloat(bits) : BFloat16ToFloat(bits);
}

namespace {

// Encodes one row of floats into `format`.
void EncodeRow(std::byte* out, const float* row, int64_t cols, WeightFormat format) {
  switch (format) {
    case WeightFormat::kF32:
      std::memcpy(out, row, static_cast<size_t>(cols) * sizeof(float));
      return;
    case WeightFormat::kF16:
      for (int64_t c = 0; c < cols; ++c) {
        const uint16_t bits = FloatToHalf(row[c]);
        std::memcpy(out + 2 * c, &bits, sizeof(bits));
      }
      return;
    case WeightFormat::kQ8_0: {
      // Quantize into an aligned temporary: BlockQ8_0 rows inside `out` need not be aligned
      // for the struct, but the kernels' stores are typed.
      std::vector<BlockQ8_0> blocks(static_cast<size_t>(cols / kQ8BlockSize));
      ActiveKernels().quantize_q8_0(blocks.data(), row, cols);
      std::memcpy(out, blocks.data(), blocks.size() * sizeof(BlockQ8_0));
      return;
    }
  }
}

}  // namespace

void WeightRowToFloat(float* out, const WeightMatrix& w, int64_t r) {
  const KernelSet& kernels = ActiveKernels();
  switch (w.format) {
    case WeightFormat::kF32:
      std::memcpy(out, w.row(r), static_cast<size_t>(w.cols) * sizeof(float));
      return;
    case WeightFormat::kF16:
      kernels.to_f32_f16(out, reinterpret_cast<const uint16_t*>(w.data), w.cols, r, r + 1);
      return;
    case WeightFormat::kQ8_0:
      kernels.to_f32_q8_0(out, reinterpret_cast<const BlockQ8_0*>(w.data), w.cols, r, r + 1);
      return;
  }
}

Result<WeightMatrix> PackMatrix(const MatrixSource& source, WeightFormat format,
                                AlignedBytes* storage) {
  *storage =
      AllocateAligned(static_cast<size_t>(PackedMatrixBytes(format, source.rows, source.cols)));
  if (!*storage) return Status::Error("out of memory packing a weight matrix");
  return PackMatrixInto(source, format, storage->get());
}

Result<WeightMatrix> PackMatrixInto(const MatrixSource& source, WeightFormat format,
                                    std::byte* out) {
  const bool source_q8 = source.dtype == DType::kU8;
  if (format == WeightFormat::kQ8_0 && source.cols % kQ8BlockSize != 0) {
    return Status::Error(fmt::format("q8_0 needs rows whose length is a multiple of {}, got {}",
                                     kQ8BlockSize, source.cols));
  }
  if (!source_q8 && source.dtype != DType::kF32 && source.dtype != DType::kF16 &&
      source.dtype != DType::kBF16) {
    return Status::Error(fmt::format("cannot use {} weights", DTypeName(source.dtype)));
  }
  WeightMatrix matrix{format, source.rows, source.cols, out};
  if (source_q8 && format == WeightFormat::kQ8_0) {  // already packed: copy as it is
    std::memcpy(out, source.data, static_cast<size_t>(matrix.bytes()));
    return matrix;
  }

  // Gather a tile of output rows as floats (for a transposed source this reads short
  // contiguous runs of each stored row instead of one strided column per output), then encode.
  constexpr int64_t kTileRows = 64;
  const int64_t cols = source.cols;
  std::vector<float> tile(static_cast<size_t>(kTileRows * cols));
  const WeightMatrix stored_q8{WeightFormat::kQ8_0, source.rows, cols, source.data};
  for (int64_t r0 = 0; r0 < source.rows; r0 += kTileRows) {
    const int64_t r1 = std::min(source.rows, r0 + kTileRows);
    if (source_q8) {
      for (int64_t r = r0; r < r1; ++r) WeightRowToFloat(&tile[(r - r0) * cols], stored_q8, r);
    } else if (source.transposed) {
      for (int64_t c = 0; c < cols; ++c) {
        for (int64_t r = r0; r < r1; ++r) {
          tile[(r - r0) * cols + c] =
              ReadFloatElement(source.data, source.dtype, c * source.rows + r);
        }
      }
    } else {
      for (int64_t r = r0; r < r1; ++r) {
        for (int64_t c = 0; c < cols; ++c) {
          tile[(r - r0) * cols + c] = ReadFloatElement(source.data, source.dtype, r * cols + c);
        }
      }
    }
    for (int64_t r = r0; r < r1; ++r) {
      EncodeRow(out + r * matrix.row_bytes(), &tile[(r - r0) * cols], cols, format);
    }
  }
  return matrix;
}

}  // namespace dgpt
