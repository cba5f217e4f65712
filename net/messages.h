// The pipeline's messages (net/PROTOCOL.md) as structs, and their exact byte encoding.
// Encoding and decoding are pure functions over byte buffers: no sockets here, so every
// malformed-input case is testable in memory.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <variant>
#include <vector>

#include "base/status.h"

namespace dgpt::net {

inline constexpr uint32_t kMagic = 0x54504744;  // "DGPT" in little-endian byte order
inline constexpr uint16_t kProtocolVersion = 1;
inline constexpr size_t kHeaderSize = 24;
inline constexpr uint32_t kDefaultMaxFrameBytes = 64u << 20;
inline constexpr size_t kMaxStringBytes = 4096;

enum class MessageType : uint16_t {
  kHello = 1,
  kAuth = 2,
  kAssign = 3,
  kAssigned = 4,
  kForward = 5,
  kResult = 6,
  kRelease = 7,
  kOk = 8,
  kPing = 9,
  kPong = 10,
  kStats = 11,
  kStatsReply = 12,
  kError = 13,
};
const char* MessageTypeName(MessageType type);  // "HELLO", ...

// FORWARD flags.
inline constexpr uint32_t kFlagLastChunk = 1u << 0;
inline constexpr uint32_t kFlagAllRows = 1u << 1;
// ASSIGN flags: the next hop is the coordinator, so this stage answers with RESULT frames.
inline constexpr uint32_t kFlagLastStage = 1u << 0;

enum class ErrorCode : uint16_t {
  kBadFrame = 1,
  kVersionMismatch = 2,
  kAuthFailed = 3,
  kWrongModel = 4,
  kCacheFull = 5,
  kUnknownSequence = 6,
  kBadRequest = 7,
  kInternal = 8,
  kShuttingDown = 9,
};
const char* ErrorCodeName(ErrorCode code);  // "cache_full", ...

enum class Role : uint8_t { kControl = 0, kData = 1 };
enum class WireDType : uint8_t { kF32 = 0, kF16 = 1 };

using Bytes32 = std::array<uint8_t, 32>;

struct FrameHeader {
  MessageType type = MessageType::kOk;
  uint32_t flags = 0;
  uint64_t request_id = 0;
  uint32_t payload_length = 0;
};

// Activations as float32 in memory; `dtype` says how they travel on the wire (f16 rounds).
struct Tensor {
  WireDType dtype = WireDType::kF32;
  uint32_t rows = 0;
  uint32_t cols = 0;
  std::vector<float> values;  // rows * cols
};

struct Hello {
  uint16_t min_version = kProtocolVersion;
  uint16_t max_version = kProtocolVersion;
  Role role = Role::kControl;
  std::string node_name;
  uint32_t cores = 0;
  uint64_t free_memory_bytes = 0;
  uint32_t max_frame_bytes = kDefaultMaxFrameBytes;
  bool auth_required = false;
  Bytes32 nonce{};
};
struct Auth {
  Bytes32 mac{};
};
struct Assign {
  Bytes32 fingerprint{};
  uint32_t n_layer = 0;
  uint32_t layer_begin = 0;
  uint32_t layer_end = 0;
  std::string next_hop;  // HOST:PORT
  WireDType wire_dtype = WireDType::kF32;
  uint32_t max_sequences = 0;
};
struct Assigned {
  Bytes32 fingerprint{};
  uint64_t weight_bytes = 0;
};
// What one stage spent on a chunk: waiting in its queue, then computing. Each stage appends its
// own to the frame it passes on, so the coordinator sees every stage's share of a step.
inline constexpr size_t kMaxStageTimings = 64;
struct StageTiming {
  uint64_t queue_ns = 0;
  uint64_t compute_ns = 0;
  bool operator==(const StageTiming&) const = default;
};
struct Forward {
  uint32_t first_position = 0;
  uint32_t capacity = 0;
  Tensor activations;
  std::vector<StageTiming> timings;  // of the stages before this hop, in chain order
};
struct ResultMsg {
  uint32_t first_position = 0;
  Tensor activations;
  std::vector<StageTiming> timings;  // of every stage, in chain order
};
struct Release {};
struct Ok {};
struct Ping {
  uint64_t timestamp_ns = 0;
};
struct Pong {
  uint64_t timestamp_ns = 0;
};
struct Stats {};
struct StatsReply {
  uint32_t sequences_in_use = 0;
  uint32_t max_sequences = 0;
  uint64_t kv_cache_bytes = 0;
  uint64_t forwards = 0;
  uint64_t tokens = 0;
  uint64_t compute_ns = 0;
  uint32_t layer_begin = 0;
  uint32_t layer_end = 0;
  uint64_t weight_bytes = 0;    // the loaded blocks' matrices: read once per decode step
  uint32_t weight_format = 0;   // WeightFormat of those matrices (0 f32, 1 f16, 2 q8_0)
  uint64_t resident_bytes = 0;  // the worker process's resident memory (RSS)
};
struct ErrorMsg {
  ErrorCode code = ErrorCode::kInternal;
  std::string message;
};

using Payload = std::variant<Hello, Auth, Assign, Assigned, Forward, ResultMsg, Release, Ok, Ping,
                             Pong, Stats, StatsReply, ErrorMsg>;

// A whole message: header fields that matter to the sender plus the decoded payload.
struct Message {
  uint32_t flags = 0;
  uint64_t request_id = 0;
  Payload payload;

  MessageType type() const;
};

// Appends header + payload to `out`. REQUIRES: tensors have rows*cols values; only FORWARD and
// ASSIGN have flags. Strings longer than kMaxStringBytes are cut to that length (at a UTF-8
// character boundary) so that, say, a long ERROR message still reaches the peer.
void EncodeMessage(const Message& message, std::vector<uint8_t>* out);

// Parses and checks a header (magic, version, known type, unknown flag bits, length against
// max_frame_bytes), without touching the payload. The error names the problem ("bad magic
// 0x...", "frame payload of N bytes exceeds the limit of M").
Result<FrameHeader> DecodeHeader(std::span<const uint8_t, kHeaderSize> bytes,
                                 uint32_t max_frame_bytes);

// Decodes a payload of the header's type; the payload must be consumed exactly.
Result<Message> DecodePayload(const FrameHeader& header, std::span<const uint8_t> payload);

// Convenience for tests and fuzzing: header + payload from one buffer.
Result<Message> DecodeFrame(std::span<const uint8_t> frame, uint32_t max_frame_bytes);

}  // namespace dgpt::net
