// A read-only memory mapping of a whole file, released on destruction (RAII over mmap).
#pragma once

#include <cstddef>
#include <string>

#include "base/status.h"

namespace dgpt {

class MappedFile {
 public:
  MappedFile() = default;
  ~MappedFile();
  MappedFile(MappedFile&& other) noexcept;
  MappedFile& operator=(MappedFile&& other) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  // Maps the file read-only. An empty file maps to size 0 with a null data pointer.
  static Result<MappedFile> Open(const std::string& path);

  const std::byte* data() const { return data_; }
  size_t size() const { return size_; }

 private:
  const std::byte* data_ = nullptr;
  size_t size_ = 0;
};

// Tells the kernel this process no longer needs the mapped pages wholly inside [data, data +
// size) (MADV_DONTNEED), so a tensor that was copied out no longer counts in resident memory.
// Reading them again later is still valid: the pages are re-read from the file.
void DropMappedPages(const std::byte* data, size_t size);

}  // namespace dgpt
