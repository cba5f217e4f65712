#include "engine/safetensors.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>
#include <new>
#include <optional>
#include <unordered_set>
#include <utility>

#include <nlohmann/json.hpp>

namespace dgpt {
namespace {

using Json = nlohmann::json;

constexpr size_t kLengthPrefixBytes = 8;
// The reference implementation refuses headers this large too; a bigger value is a corrupt
// length field, and believing it would make us parse the tensor bytes as JSON.
constexpr uint64_t kMaxHeaderBytes = uint64_t{100} << 20;
// Parser messages echo the offending input; keep them short enough for one log line.
constexpr size_t kMaxReasonChars = 200;
constexpr std::string_view kMetadataKey = "__metadata__";
// A valid header nests three deep (header, entry, shape). Only a corrupt header nests deeper,
// and the parser allocates per level, so stop it early.
constexpr int kMaxHeaderNesting = 64;

constexpr std::array<DType, 15> kAllDTypes = {
    DType::kF64, DType::kF32, DType::kF16,  DType::kBF16,   DType::kI64,
    DType::kI32, DType::kI16, DType::kI8,   DType::kU64,    DType::kU32,
    DType::kU16, DType::kU8,  DType::kBool, DType::kF8E4M3, DType::kF8E5M2};

// Escapes control and non-ASCII bytes so that text taken from a (possibly corrupt) file can
// never break the one-line error format, and cuts it at max_chars.
std::string Printable(std::string_view text, size_t max_chars) {
  std::string out;
  for (unsigned char c : text) {
    if (out.size() >= max_chars) {
      out += "...";
      break;
    }
    if (c >= 0x20 && c < 0x7f && c != '\\') {
      out += static_cast<char>(c);
    } else {
      char escaped[5];
      std::snprintf(escaped, sizeof(escaped), "\\x%02x", c);
      out += escaped;
    }
  }
  return out;
}

// Tensor names come from the file; quote them so that empty or odd names stay visible.
std::string Quote(std::string_view name) {
  return "\"" + Printable(name, kMaxReasonChars) + "\"";
}

std::string TensorPrefix(std::string_view name) {
  return "tensor " + Quote(name) + ": ";
}

std::string ShapeString(const std::vector<int64_t>& shape) {
  std::string out = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i > 0) out += ", ";
    out += std::to_string(shape[i]);
  }
  return out + "]";
}

std::string RangeString(uint64_t begin, uint64_t end) {
  return "[" + std::to_string(begin) + ", " + std::to_string(end) + "]";
}

// Byte size of a tensor, rejecting negative dimensions and counts that do not fit in int64
// (num_elements() returns int64_t) or whose byte size does not fit in uint64.
Result<uint64_t> NumBytesFor(DType dtype, const std::vector<int64_t>& shape) {
  uint64_t elements = 1;
  for (int64_t dim : shape) {
    if (dim < 0) {
      return Status::Error("negative dimension " + std::to_string(dim) + " in shape " +
                           ShapeString(shape));
    }
    if (__builtin_mul_overflow(elements, static_cast<uint64_t>(dim), &elements) ||
        elements > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return Status::Error("element count of shape " + ShapeString(shape) + " overflows");
    }
  }
  uint64_t bytes = 0;
  if (__builtin_mul_overflow(elements, uint64_t{DTypeSize(dtype)}, &bytes)) {
    return Status::Error("byte size of shape " + ShapeString(shape) + " overflows");
  }
  return bytes;
}

uint64_t ReadLittleEndian64(const std::byte* bytes) {
  uint64_t value = 0;
  for (size_t i = 0; i < 8; ++i) value |= std::to_integer<uint64_t>(bytes[i]) << (8 * i);
  return value;
}

std::optional<uint64_t> AsNonNegativeInteger(const Json& value) {
  if (value.is_number_unsigned()) return value.get<uint64_t>();
  if (value.is_number_integer() && value.get<int64_t>() >= 0) {
    return static_cast<uint64_t>(value.get<int64_t>());
  }
  return std::nullopt;
}

// What the JSON DOM loses: the order of the tensors and whether a key was repeated
// (nlohmann keeps the last value silently, which would hide a corrupt or forged header).
struct HeaderKeys {
  std::vector<std::string> top_level_in_order;
  std::optional<std::string> duplicate_error;
};

Result<Json> ParseHeaderJson(const char* begin, const char* end, HeaderKeys* keys) {
  struct NestedTooDeep {};  // thrown from the callback: the only way to stop the parser
  std::vector<std::unordered_set<std::string>> open_objects;
  auto track_keys = [&](int depth, Json::parse_event_t event, Json& parsed) {
    switch (event) {
      case Json::parse_event_t::object_start:
        if (depth >= kMaxHeaderNesting) throw NestedTooDeep{};
        open_objects.emplace_back();
        break;
      case Json::parse_event_t::array_start:
        if (depth >= kMaxHeaderNesting) throw NestedTooDeep{};
        break;
      case Json::parse_event_t::object_end:
        open_objects.pop_back();
        break;
      case Json::parse_event_t::key: {
        const std::string& key = parsed.get_ref<const std::string&>();
        const bool is_tensor_name = depth == 1 && key != kMetadataKey;
        if (depth == 1) keys->top_level_in_order.push_back(key);
        if (!open_objects.back().insert(key).second && !keys->duplicate_error) {
          keys->duplicate_error = is_tensor_name ? "duplicate tensor name " + Quote(key)
                                                 : "duplicate key " + Quote(key) + " in header";
        }
        break;
      }
      default:
        break;
    }
    return true;
  };
  try {
    return Json::parse(begin, end, track_keys);
  } catch (const Json::exception& error) {
    // Drop the "[json.exception.parse_error.101] " prefix; the rest is the useful reason.
    std::string_view reason = error.what();
    if (size_t prefix_end = reason.find("] ");
        reason.starts_with("[json.") && prefix_end != std::string_view::npos) {
      reason.remove_prefix(prefix_end + 2);
    }
    return Status::Error("header is not valid JSON: " + Printable(reason, kMaxReasonChars));
  } catch (const NestedTooDeep&) {
    return Status::Error("header JSON nests deeper than " + std::to_string(kMaxHeaderNesting) +
                         " levels");
  } catch (const std::bad_alloc&) {
    return Status::Error("out of memory parsing the header JSON");
  }
}

Result<TensorInfo> ParseTensorEntry(const std::string& name, const Json& entry,
                                    uint64_t data_section_bytes) {
  const std::string prefix = TensorPrefix(name);
  auto error = [&](const std::string& problem) { return Status::Error(prefix + problem); };
  if (!entry.is_object()) {
    return error("entry is not an object but " + std::string(entry.type_name()));
  }
  TensorInfo info;
  info.name = name;

  auto dtype_field = entry.find("dtype");
  if (dtype_field == entry.end()) return error("missing \"dtype\"");
  if (!dtype_field->is_string()) return error("\"dtype\" is not a string");
  Result<DType> dtype = ParseDType(dtype_field->get_ref<const std::string&>());
  if (!dtype.ok()) return error(dtype.status().message());
  info.dtype = *dtype;

  auto shape_field = entry.find("shape");
  if (shape_field == entry.end()) return error("missing \"shape\"");
  if (!shape_field->is_array()) return error("\"shape\" is not an array");
  for (const Json& dim : *shape_field) {
    if (dim.is_number_unsigned()) {
      if (dim.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        return error("dimension " + std::to_string(dim.get<uint64_t>()) + " is too large");
      }
      info.shape.push_back(static_cast<int64_t>(dim.get<uint64_t>()));
    } else if (dim.is_number_integer()) {
      info.shape.push_back(dim.get<int64_t>());  // negative; NumBytesFor names it
    } else {
      return error("\"shape\" holds a non-integer: " + Printable(dim.dump(), kMaxReasonChars));
    }
  }
  Result<uint64_t> expected_bytes = NumBytesFor(info.dtype, info.shape);
  if (!expected_bytes.ok()) return error(expected_bytes.status().message());

  auto offsets_field = entry.find("data_offsets");
  if (offsets_field == entry.end()) return error("missing \"data_offsets\"");
  if (!offsets_field->is_array() || offsets_field->size() != 2) {
    return error("\"data_offsets\" is not a [begin, end] pair");
  }
  std::optional<uint64_t> begin = AsNonNegativeInteger((*offsets_field)[0]);
  std::optional<uint64_t> end = AsNonNegativeInteger((*offsets_field)[1]);
  if (!begin || !end) return error("\"data_offsets\" must hold two non-negative integers");
  info.begin = *begin;
  info.end = *end;
  if (info.begin > info.end) {
    return error("data_offsets begin " + std::to_string(info.begin) + " > end " +
                 std::to_string(info.end));
  }
  if (info.end > data_section_bytes) {
    return error("data_offsets end " + std::to_string(info.end) +
                 " is past the end of the data section (" + std::to_string(data_section_bytes) +
                 " bytes)");
  }
  if (info.num_bytes() != *expected_bytes) {
    return error("shape " + ShapeString(info.shape) + " of " + std::string(DTypeName(info.dtype)) +
                 " needs " + std::to_string(*expected_bytes) + " bytes but data_offsets " +
                 RangeString(info.begin, info.end) + " span " + std::to_string(info.num_bytes()));
  }
  return info;
}

Status ParseMetadata(const Json& value, std::map<std::string, std::string>* metadata) {
  if (value.is_null()) return Status::Ok();  // the reference library writes/reads it as optional
  if (!value.is_object()) {
    return Status::Error("\"__metadata__\" is not an object but " + std::string(value.type_name()));
  }
  for (const auto& [key, entry] : value.items()) {
    if (!entry.is_string()) {
      return Status::Error("\"__metadata__\" value for key " + Quote(key) + " is not a string");
    }
    (*metadata)[key] = entry.get<std::string>();
  }
  return Status::Ok();
}

// Tensors must tile the data section exactly: an overlap means two tensors alias the same
// bytes, a hole means the offsets are wrong (the reference library rejects both).
Status CheckTensorsTileDataSection(const std::vector<TensorInfo>& tensors,
                                   uint64_t data_section_bytes) {
  std::vector<const TensorInfo*> by_offset;
  for (const TensorInfo& tensor : tensors) {
    if (tensor.num_bytes() > 0) by_offset.push_back(&tensor);  // empty ones occupy no bytes
  }
  std::stable_sort(by_offset.begin(), by_offset.end(), [](const auto* a, const auto* b) {
    return std::pair(a->begin, a->end) < std::pair(b->begin, b->end);
  });
  uint64_t covered_end = 0;
  const TensorInfo* previous = nullptr;
  for (const TensorInfo* tensor : by_offset) {
    if (tensor->begin < covered_end) {
      return Status::Error("tensors " + Quote(previous->name) + " (data_offsets " +
                           RangeString(previous->begin, previous->end) + ") and " +
                           Quote(tensor->name) + " (data_offsets " +
                           RangeString(tensor->begin, tensor->end) + ") overlap");
    }
    if (tensor->begin > covered_end) {
      return Status::Error("data section bytes [" + std::to_string(covered_end) + ", " +
                           std::to_string(tensor->begin) + ") belong to no tensor (the next is " +
                           Quote(tensor->name) + ")");
    }
    covered_end = tensor->end;
    previous = tensor;
  }
  if (covered_end < data_section_bytes) {
    return Status::Error("data section bytes [" + std::to_string(covered_end) + ", " +
                         std::to_string(data_section_bytes) + ") at its end belong to no tensor");
  }
  return Status::Ok();
}

// Removes the temporary file unless the write reached the rename.
class TemporaryFile {
 public:
  explicit TemporaryFile(std::string path) : path_(std::move(path)) {}
  ~TemporaryFile() {
    if (fd_ >= 0) ::close(fd_);
    if (!committed_) ::unlink(path_.c_str());
  }
  TemporaryFile(const TemporaryFile&) = delete;
  TemporaryFile& operator=(const TemporaryFile&) = delete;

  // Each returns 0 or an errno value.
  int Create() {
    fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    return fd_ < 0 ? errno : 0;
  }
  int Write(const void* data, size_t size) {
    const char* cursor = static_cast<const char*>(data);
    while (size > 0) {
      ssize_t written = ::write(fd_, cursor, size);
      if (written < 0) {
        if (errno == EINTR) continue;
        return errno;
      }
      cursor += written;
      size -= static_cast<size_t>(written);
    }
    return 0;
  }
  // fsync before rename so that a crash leaves the old file or the complete new one.
  int SyncAndClose() {
    int result = ::fsync(fd_) != 0 ? errno : 0;
    if (::close(fd_) != 0 && result == 0) result = errno;
    fd_ = -1;
    return result;
  }
  int RenameTo(const std::string& final_path) {
    if (::rename(path_.c_str(), final_path.c_str()) != 0) return errno;
    committed_ = true;
    return 0;
  }

 private:
  std::string path_;
  int fd_ = -1;
  bool committed_ = false;
};

}  // namespace

size_t DTypeSize(DType dtype) {
  switch (dtype) {
    case DType::kF64:
    case DType::kI64:
    case DType::kU64:
      return 8;
    case DType::kF32:
    case DType::kI32:
    case DType::kU32:
      return 4;
    case DType::kF16:
    case DType::kBF16:
    case DType::kI16:
    case DType::kU16:
      return 2;
    case DType::kI8:
    case DType::kU8:
    case DType::kBool:
    case DType::kF8E4M3:
    case DType::kF8E5M2:
      return 1;
  }
  return 0;  // unreachable for valid enumerators
}

std::string_view DTypeName(DType dtype) {
  switch (dtype) {
    case DType::kF64:
      return "F64";
    case DType::kF32:
      return "F32";
    case DType::kF16:
      return "F16";
    case DType::kBF16:
      return "BF16";
    case DType::kI64:
      return "I64";
    case DType::kI32:
      return "I32";
    case DType::kI16:
      return "I16";
    case DType::kI8:
      return "I8";
    case DType::kU64:
      return "U64";
    case DType::kU32:
      return "U32";
    case DType::kU16:
      return "U16";
    case DType::kU8:
      return "U8";
    case DType::kBool:
      return "BOOL";
    case DType::kF8E4M3:
      return "F8_E4M3";
    case DType::kF8E5M2:
      return "F8_E5M2";
  }
  return "INVALID";
}

Result<DType> ParseDType(std::string_view name) {
  for (DType dtype : kAllDTypes) {
    if (DTypeName(dtype) == name) return dtype;
  }
  return Status::Error("unknown dtype " + Quote(name));
}

int64_t TensorInfo::num_elements() const {
  int64_t elements = 1;
  for (int64_t dim : shape) elements *= dim;
  return elements;
}

Result<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(const std::string& path) {
  auto error = [&](const std::string& problem) { return Status::Error(path + ": " + problem); };

  Result<MappedFile> mapping = MappedFile::Open(path);
  if (!mapping.ok()) return mapping.status();
  const std::byte* bytes = mapping->data();
  const uint64_t file_bytes = mapping->size();

  if (file_bytes < kLengthPrefixBytes) {
    return error("truncated: " + std::to_string(file_bytes) +
                 " bytes, too short for the 8-byte header length");
  }
  const uint64_t header_bytes = ReadLittleEndian64(bytes);
  if (header_bytes > kMaxHeaderBytes) {
    return error("header length " + std::to_string(header_bytes) +
                 " is absurd (limit 100 MiB); not a safetensors file or corrupt");
  }
  const uint64_t bytes_after_length = file_bytes - kLengthPrefixBytes;
  if (header_bytes > bytes_after_length) {
    return error("header length " + std::to_string(header_bytes) +
                 " is past the end of the file (only " + std::to_string(bytes_after_length) +
                 " bytes follow the length); truncated?");
  }
  const uint64_t data_section_bytes = bytes_after_length - header_bytes;
  const std::byte* data_section = bytes + kLengthPrefixBytes + header_bytes;

  const char* header_text = reinterpret_cast<const char*>(bytes + kLengthPrefixBytes);
  HeaderKeys keys;
  Result<Json> header = ParseHeaderJson(header_text, header_text + header_bytes, &keys);
  if (!header.ok()) return header.status().WithContext(path);
  if (!header->is_object()) {
    return error("header is not a JSON object but " + std::string(header->type_name()));
  }
  if (keys.duplicate_error) return error(*keys.duplicate_error);

  std::unique_ptr<SafetensorsFile> file(new SafetensorsFile());
  file->path_ = path;
  for (const std::string& name : keys.top_level_in_order) {
    const Json& entry = header->at(name);
    if (name == kMetadataKey) {
      DGPT_RETURN_IF_ERROR(ParseMetadata(entry, &file->metadata_).WithContext(path));
      continue;
    }
    Result<TensorInfo> tensor = ParseTensorEntry(name, entry, data_section_bytes);
    if (!tensor.ok()) return tensor.status().WithContext(path);
    tensor->data = data_section + tensor->begin;
    file->index_.emplace(name, file->tensors_.size());
    file->tensors_.push_back(std::move(tensor).value());
  }
  DGPT_RETURN_IF_ERROR(
      CheckTensorsTileDataSection(file->tensors_, data_section_bytes).WithContext(path));
  file->mapping_ = std::move(mapping).value();
  return file;
}

const TensorInfo* SafetensorsFile::Find(std::string_view name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

Status WriteSafetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                        const std::map<std::string, std::string>& metadata) {
  auto error = [&](const std::string& problem) { return Status::Error(path + ": " + problem); };

  // ordered_json keeps the header in the order the tensors are written.
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header[std::string(kMetadataKey)] = metadata;
  std::unordered_set<std::string_view> names;
  uint64_t offset = 0;
  for (const TensorToWrite& tensor : tensors) {
    const std::string prefix = TensorPrefix(tensor.name);
    if (tensor.name == kMetadataKey) return error(prefix + "name is reserved for metadata");
    if (!names.insert(tensor.name).second)
      return error("duplicate tensor name " + Quote(tensor.name));
    Result<uint64_t> expected_bytes = NumBytesFor(tensor.dtype, tensor.shape);
    if (!expected_bytes.ok()) return error(prefix + expected_bytes.status().message());
    if (tensor.num_bytes != *expected_bytes) {
      return error(prefix + "shape " + ShapeString(tensor.shape) + " of " +
                   std::string(DTypeName(tensor.dtype)) + " needs " +
                   std::to_string(*expected_bytes) + " bytes but " +
                   std::to_string(tensor.num_bytes) + " were given");
    }
    if (tensor.num_bytes > 0 && tensor.data == nullptr) return error(prefix + "data is null");
    nlohmann::ordered_json entry = nlohmann::ordered_json::object();
    entry["dtype"] = DTypeName(tensor.dtype);
    entry["shape"] = tensor.shape;
    entry["data_offsets"] = nlohmann::ordered_json::array({offset, offset + tensor.num_bytes});
    header[tensor.name] = std::move(entry);
    offset += tensor.num_bytes;
  }

  std::string header_text;
  try {
    header_text = header.dump();
  } catch (const nlohmann::ordered_json::exception&) {
    return error("a tensor name or metadata string is not valid UTF-8");
  }
  // Readers may use the tensor bytes in place; start the data section 8-byte aligned.
  header_text.append(
      (kLengthPrefixBytes - header_text.size() % kLengthPrefixBytes) % kLengthPrefixBytes, ' ');
  std::array<unsigned char, kLengthPrefixBytes> length_prefix;
  for (size_t i = 0; i < kLengthPrefixBytes; ++i) {
    length_prefix[i] = static_cast<unsigned char>(uint64_t{header_text.size()} >> (8 * i));
  }

  const std::string temporary_path = path + ".tmp";
  TemporaryFile file(temporary_path);
  auto io_error = [&](const std::string& action, int error_number) {
    return error("cannot " + action + ": " + std::strerror(error_number));
  };
  if (int e = file.Create()) return io_error("create " + temporary_path, e);
  if (int e = file.Write(length_prefix.data(), length_prefix.size())) {
    return io_error("write " + temporary_path, e);
  }
  if (int e = file.Write(header_text.data(), header_text.size())) {
    return io_error("write " + temporary_path, e);
  }
  for (const TensorToWrite& tensor : tensors) {
    if (tensor.num_bytes == 0) continue;
    if (int e = file.Write(tensor.data, tensor.num_bytes)) {
      return io_error("write " + temporary_path, e);
    }
  }
  if (int e = file.SyncAndClose()) return io_error("write " + temporary_path, e);
  if (int e = file.RenameTo(path)) return io_error("rename " + temporary_path, e);
  return Status::Ok();
}

}  // namespace dgpt
