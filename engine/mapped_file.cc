#include "engine/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

namespace dgpt {
namespace {

Status ErrnoError(const std::string& path, const char* action, int error_number) {
  return Status::Error(path + ": " + action + ": " + std::strerror(error_number));
}

// Closes the descriptor on every return path; the mapping outlives it.
class FileDescriptor {
 public:
  explicit FileDescriptor(int fd) : fd_(fd) {}
  ~FileDescriptor() {
    if (fd_ >= 0) ::close(fd_);
  }
  FileDescriptor(const FileDescriptor&) = delete;
  FileDescriptor& operator=(const FileDescriptor&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

}  // namespace

MappedFile::~MappedFile() {
  if (data_ != nullptr) ::munmap(const_cast<std::byte*>(data_), size_);
}

MappedFile::MappedFile(MappedFile&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}

MappedFile& MappedFile::operator=(MappedFile&& other) noexcept {
  if (this != &other) {
    if (data_ != nullptr) ::munmap(const_cast<std::byte*>(data_), size_);
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

Result<MappedFile> MappedFile::Open(const std::string& path) {
  FileDescriptor fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) return ErrnoError(path, "cannot open", errno);

  struct stat file_status;
  if (::fstat(fd.get(), &file_status) != 0) return ErrnoError(path, "cannot stat", errno);
  // Directories and pipes open fine but cannot be mapped; say so instead of "No such device".
  if (!S_ISREG(file_status.st_mode)) return Status::Error(path + ": not a regular file");

  MappedFile file;
  if (file_status.st_size == 0) return file;  // mmap rejects length 0

  void* address = ::mmap(nullptr, static_cast<size_t>(file_status.st_size), PROT_READ, MAP_PRIVATE,
                         fd.get(), 0);
  if (address == MAP_FAILED) return ErrnoError(path, "cannot mmap", errno);
  file.data_ = static_cast<const std::byte*>(address);
  file.size_ = static_cast<size_t>(file_status.st_size);
  return file;
}

void DropMappedPages(const std::byte* data, size_t size) {
  const auto page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  const auto begin = (reinterpret_cast<uintptr_t>(data) + page - 1) / page * page;
  const auto end = (reinterpret_cast<uintptr_t>(data) + size) / page * page;
  if (end > begin) ::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);
}

}  // namespace dgpt
