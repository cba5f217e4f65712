// Fingerprints identify a slice of a model (its config and some blocks' weights) independently
// of file layout, so a worker holding a full checkpoint and one holding a shard of the same
// layers agree, and a coordinator can refuse a worker that loaded something else
// (net/PROTOCOL.md, "Setup and the fingerprint").
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

#include "base/status.h"
#include "engine/checkpoint.h"
#include "engine/config.h"
#include "engine/safetensors.h"

namespace dgpt {

using Fingerprint = std::array<uint8_t, 32>;  // a SHA-256 digest

// SHA-256 over, each piece length-prefixed (8-byte little-endian length, then the bytes):
// the canonical config JSON (ModelConfig::ToJson().dump()), then for each block in `layers`
// ascending and each tensor in kBlockTensorNames order: its name without the "transformer."
// prefix ("h.3.ln_1.weight"), its dtype name ("F32"), its shape (8-byte little-endian dims),
// and its bytes as stored in the file (an F16 checkpoint hashes its F16 bytes). Reads the
// bytes from model.file(), so no layer needs to be mapped. Errors: `layers` outside what the
// checkpoint holds, a missing tensor.
Result<Fingerprint> StageFingerprint(const Checkpoint& model, LayerRange layers);

// The same over a safetensors file directly; `tensor_prefix` is "transformer." or "".
Result<Fingerprint> StageFingerprint(const ModelConfig& config, const SafetensorsFile& file,
                                     std::string_view tensor_prefix, LayerRange layers);

// 64 lowercase hex digits, and back (either case accepted; anything else is an error).
std::string FingerprintHex(const Fingerprint& fingerprint);
Result<Fingerprint> ParseFingerprintHex(std::string_view hex);

// SHA-256 of a whole file's bytes (for manifests); errors name the file.
Result<Fingerprint> FileSha256(const std::string& path);

}  // namespace dgpt
