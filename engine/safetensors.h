// Safetensors checkpoints: an 8-byte little-endian header length N, N bytes of JSON
// ({"name": {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}),
// then the tensor bytes. Files are memory-mapped: opening one reads only the header, and a
// tensor's pages are touched only when its data is used.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "engine/mapped_file.h"

namespace dgpt {

// Every dtype the safetensors format defines. The engine computes with F32/F16/BF16 only;
// the others are parsed so that a checkpoint holding e.g. integer buffers still opens.
enum class DType {
  kF64,
  kF32,
  kF16,
  kBF16,
  kI64,
  kI32,
  kI16,
  kI8,
  kU64,
  kU32,
  kU16,
  kU8,
  kBool,
  kF8E4M3,
  kF8E5M2
};

size_t DTypeSize(DType dtype);
std::string_view DTypeName(DType dtype);          // "F32", "BF16", ...
Result<DType> ParseDType(std::string_view name);  // error on unknown names

struct TensorInfo {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // byte offsets relative to the start of the data section
  uint64_t end = 0;
  const std::byte* data = nullptr;  // points into the mapping; valid while the file lives

  int64_t num_elements() const;
  uint64_t num_bytes() const { return end - begin; }
};

class SafetensorsFile {
 public:
  // Maps and validates the file. Errors are one line and start with the path: truncated file,
  // header length past the end, bad JSON, unknown dtype, offsets out of range or overlapping,
  // shape/byte-size mismatch, bytes of the data section that no tensor covers.
  static Result<std::unique_ptr<SafetensorsFile>> Open(const std::string& path);

  const std::string& path() const { return path_; }
  // nullptr if absent.
  const TensorInfo* Find(std::string_view name) const;
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

 private:
  SafetensorsFile() = default;
  std::string path_;
  MappedFile mapping_;
  std::vector<TensorInfo> tensors_;  // in header order
  std::map<std::string, size_t, std::less<>> index_;
  std::map<std::string, std::string> metadata_;
};

// A tensor to write: its bytes must be exactly num_elements * DTypeSize(dtype).
struct TensorToWrite {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  const void* data;
  size_t num_bytes;
};

// Writes a safetensors file (tensors in the given order, 8-byte aligned data section).
// Writes to a temporary name and renames, so a crash never leaves a half-written file.
Status WriteSafetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                        const std::map<std::string, std::string>& metadata = {});

}  // namespace dgpt
