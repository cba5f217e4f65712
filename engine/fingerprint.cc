#include "engine/fingerprint.h"

#include <fmt/format.h>
#include <openssl/evp.h>

#include <memory>
#include <nlohmann/json.hpp>
#include <vector>

#include "engine/mapped_file.h"

namespace dgpt {
namespace {

// An incremental SHA-256 (OpenSSL EVP). A failure inside OpenSSL is remembered and reported by
// Finish, so callers feed pieces without checking each one.
class Sha256 {
 public:
  Sha256() : context_(EVP_MD_CTX_new(), EVP_MD_CTX_free) {
    ok_ = context_ && EVP_DigestInit_ex(context_.get(), EVP_sha256(), nullptr) == 1;
  }

  void Update(const void* data, size_t size) {
    if (ok_ && size > 0) ok_ = EVP_DigestUpdate(context_.get(), data, size) == 1;
  }

  // A length-prefixed piece, so that no two different sequences of pieces hash the same bytes.
  void UpdatePiece(const void* data, size_t size) {
    uint8_t length[8];
    for (int i = 0; i < 8; ++i) length[i] = static_cast<uint8_t>(uint64_t{size} >> (8 * i));
    Update(length, sizeof(length));
    Update(data, size);
  }
  void UpdatePiece(std::string_view text) { UpdatePiece(text.data(), text.size()); }

  Result<Fingerprint> Finish() {
    Fingerprint digest{};
    unsigned int size = 0;
    if (!ok_ || EVP_DigestFinal_ex(context_.get(), digest.data(), &size) != 1 ||
        size != digest.size()) {
      return Status::Error("SHA-256 failed inside OpenSSL");
    }
    return digest;
  }

 private:
  std::unique_ptr<EVP_MD_CTX, void (*)(EVP_MD_CTX*)> context_;
  bool ok_ = false;
};

}  // namespace

Result<Fingerprint> StageFingerprint(const ModelConfig& config, const SafetensorsFile& file,
                                     std::string_view tensor_prefix, LayerRange layers) {
  if (layers.begin < 0 || layers.begin > layers.end || layers.end > config.n_layer) {
    return Status::Error(
        fmt::format("{}: cannot fingerprint layers {}:{} of a model with {} layers", file.path(),
                    layers.begin, layers.end, config.n_layer));
  }
  Sha256 sha;
  sha.UpdatePiece(config.ToJson().dump());
  for (int block = layers.begin; block < layers.end; ++block) {
    for (std::string_view tensor : kBlockTensorNames) {
      const std::string name = fmt::format("h.{}.{}", block, tensor);
      const TensorInfo* info = file.Find(std::string(tensor_prefix) + name);
      if (!info) {
        return Status::Error(
            fmt::format("{}: missing tensor {}{}", file.path(), tensor_prefix, name));
      }
      sha.UpdatePiece(name);
      sha.UpdatePiece(DTypeName(info->dtype));
      std::vector<uint8_t> shape;
      for (int64_t dim : info->shape) {
        for (int i = 0; i < 8; ++i) shape.push_back(static_cast<uint8_t>(uint64_t(dim) >> (8 * i)));
      }
      sha.UpdatePiece(shape.data(), shape.size());
      sha.UpdatePiece(info->data, info->num_bytes());
      // The engine computes from packed copies of the matrices (engine/weights.h), so hashing
      // must not leave their mapped pages resident.
      if (tensor.ends_with(".weight") && tensor.find(".c_") != std::string_view::npos) {
        DropMappedPages(info->data, static_cast<size_t>(info->num_bytes()));
      }
    }
  }
  return sha.Finish();
}

Result<Fingerprint> StageFingerprint(const Checkpoint& model, LayerRange layers) {
  const LayerRange held = model.held_layers();
  if (layers.size() > 0 && (layers.begin < held.begin || layers.end > held.end)) {
    return Status::Error(fmt::format("{} holds layers {}:{}; cannot fingerprint layers {}:{}",
                                     model.dir(), held.begin, held.end, layers.begin, layers.end));
  }
  return StageFingerprint(model.config(), model.file(), model.tensor_prefix(), layers);
}

std::string FingerprintHex(const Fingerprint& fingerprint) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string hex;
  hex.reserve(2 * fingerprint.size());
  for (uint8_t byte : fingerprint) {
    hex.push_back(kDigits[byte >> 4]);
    hex.push_back(kDigits[byte & 0xf]);
  }
  return hex;
}

Result<Fingerprint> ParseFingerprintHex(std::string_view hex) {
  auto digit_value = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  Fingerprint fingerprint{};
  bool ok = hex.size() == 2 * fingerprint.size();
  for (size_t i = 0; ok && i < fingerprint.size(); ++i) {
    const int high = digit_value(hex[2 * i]), low = digit_value(hex[2 * i + 1]);
    ok = high >= 0 && low >= 0;
    if (ok) fingerprint[i] = static_cast<uint8_t>(high << 4 | low);
  }
  if (!ok) {
    return Status::Error(fmt::format("\"{}\" is not a fingerprint (expected 64 hex digits)", hex));
  }
  return fingerprint;
}

Result<Fingerprint> FileSha256(const std::string& path) {
  auto file = MappedFile::Open(path);
  if (!file.ok()) return file.status();
  Sha256 sha;
  sha.Update(file->data(), file->size());
  auto digest = sha.Finish();
  if (!digest.ok()) return digest.status().WithContext(path);
  return digest;
}

}  // namespace dgpt
