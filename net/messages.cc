#include "net/messages.h"

#include <bit>
#include <cassert>
#include <cstdio>
#include <iterator>
#include <string_view>
#include <type_traits>
#include <utility>

#include "base/half.h"
#include "net/coding.h"

namespace dgpt::net {
namespace {

// Payload lists its alternatives in wire type order, so a message's type is its index + 1.
template <typename T, MessageType kType>
constexpr bool AtWireIndex() {
  return std::is_same_v<std::variant_alternative_t<static_cast<size_t>(kType) - 1, Payload>, T>;
}
static_assert(std::variant_size_v<Payload> == 13);
static_assert(AtWireIndex<Hello, MessageType::kHello>() &&
              AtWireIndex<Auth, MessageType::kAuth>() &&
              AtWireIndex<Assign, MessageType::kAssign>() &&
              AtWireIndex<Assigned, MessageType::kAssigned>() &&
              AtWireIndex<Forward, MessageType::kForward>() &&
              AtWireIndex<ResultMsg, MessageType::kResult>() &&
              AtWireIndex<Release, MessageType::kRelease>() &&
              AtWireIndex<Ok, MessageType::kOk>() && AtWireIndex<Ping, MessageType::kPing>() &&
              AtWireIndex<Pong, MessageType::kPong>() &&
              AtWireIndex<Stats, MessageType::kStats>() &&
              AtWireIndex<StatsReply, MessageType::kStatsReply>() &&
              AtWireIndex<ErrorMsg, MessageType::kError>());

constexpr const char* kMessageTypeNames[] = {
    "HELLO", "AUTH", "ASSIGN", "ASSIGNED", "FORWARD",     "RESULT", "RELEASE",
    "OK",    "PING", "PONG",   "STATS",    "STATS_REPLY", "ERROR",
};
constexpr const char* kErrorCodeNames[] = {
    "bad_frame",        "version_mismatch", "auth_failed", "wrong_model",   "cache_full",
    "unknown_sequence", "bad_request",      "internal",    "shutting_down",
};

bool IsKnownType(uint16_t type) {
  return type >= 1 && type <= std::size(kMessageTypeNames);
}
bool IsKnownErrorCode(uint16_t code) {
  return code >= 1 && code <= std::size(kErrorCodeNames);
}

std::string Hex(uint32_t value) {
  char text[16];
  std::snprintf(text, sizeof(text), "0x%08x", value);
  return text;
}

// `value * factor` in decimal without overflow: a tensor's byte size can exceed 2^64.
std::string TimesSmall(uint64_t value, unsigned factor) {
  std::string digits = std::to_string(value);
  unsigned carry = 0;
  for (auto it = digits.rbegin(); it != digits.rend(); ++it) {
    const unsigned product = static_cast<unsigned>(*it - '0') * factor + carry;
    *it = static_cast<char>('0' + product % 10);
    carry = product / 10;
  }
  if (carry != 0) digits.insert(0, std::to_string(carry));
  return digits;
}

size_t WireValueBytes(WireDType dtype) {
  return dtype == WireDType::kF16 ? 2 : 4;
}
const char* WireDTypeName(WireDType dtype) {
  return dtype == WireDType::kF16 ? "f16" : "f32";
}

// ---- Encoding -------------------------------------------------------------------------------

// Overlong strings are cut (never split inside a UTF-8 character) so the peer can decode them.
void PutBoundedString(std::vector<uint8_t>* out, std::string_view value) {
  if (value.size() > kMaxStringBytes) {
    size_t length = kMaxStringBytes;
    while (length > 0 && (static_cast<uint8_t>(value[length]) & 0xc0) == 0x80) --length;
    value = value.substr(0, length);
  }
  PutString(out, value);
}

void PutTensor(std::vector<uint8_t>* out, const Tensor& tensor) {
  assert(tensor.values.size() == uint64_t{tensor.rows} * tensor.cols);  // REQUIRES of Encode
  PutU8(out, static_cast<uint8_t>(tensor.dtype));
  PutU32(out, tensor.rows);
  PutU32(out, tensor.cols);
  // Sized once and filled in place: activations are the bulk of the traffic.
  const size_t value_bytes = WireValueBytes(tensor.dtype);
  size_t at = out->size();
  out->resize(at + tensor.values.size() * value_bytes);
  uint8_t* dst = out->data() + at;
  for (float value : tensor.values) {
    if (tensor.dtype == WireDType::kF16) {
      const uint16_t half = FloatToHalf(value);
      dst[0] = static_cast<uint8_t>(half);
      dst[1] = static_cast<uint8_t>(half >> 8);
    } else {
      EncodeFixed32(dst, std::bit_cast<uint32_t>(value));
    }
    dst += value_bytes;
  }
}

void EncodeFields(const Hello& m, std::vector<uint8_t>* out) {
  PutU16(out, m.min_version);
  PutU16(out, m.max_version);
  PutU8(out, static_cast<uint8_t>(m.role));
  PutBoundedString(out, m.node_name);
  PutU32(out, m.cores);
  PutU64(out, m.free_memory_bytes);
  PutU32(out, m.max_frame_bytes);
  PutU8(out, m.auth_required ? 1 : 0);
  PutBytes32(out, m.nonce);
}
void EncodeFields(const Auth& m, std::vector<uint8_t>* out) {
  PutBytes32(out, m.mac);
}
void EncodeFields(const Assign& m, std::vector<uint8_t>* out) {
  PutBytes32(out, m.fingerprint);
  PutU32(out, m.n_layer);
  PutU32(out, m.layer_begin);
  PutU32(out, m.layer_end);
  PutBoundedString(out, m.next_hop);
  PutU8(out, static_cast<uint8_t>(m.wire_dtype));
  PutU32(out, m.max_sequences);
}
void EncodeFields(const Assigned& m, std::vector<uint8_t>* out) {
  PutBytes32(out, m.fingerprint);
  PutU64(out, m.weight_bytes);
}
void PutTimings(std::vector<uint8_t>* out, const std::vector<StageTiming>& timings) {
  const size_t count = std::min(timings.size(), kMaxStageTimings);
  PutU8(out, static_cast<uint8_t>(count));
  for (size_t i = 0; i < count; ++i) {
    PutU64(out, timings[i].queue_ns);
    PutU64(out, timings[i].compute_ns);
  }
}
void EncodeFields(const Forward& m, std::vector<uint8_t>* out) {
  PutU32(out, m.first_position);
  PutU32(out, m.capacity);
  PutTensor(out, m.activations);
  PutTimings(out, m.timings);
}
void EncodeFields(const ResultMsg& m, std::vector<uint8_t>* out) {
  PutU32(out, m.first_position);
  PutTensor(out, m.activations);
  PutTimings(out, m.timings);
}
void EncodeFields(const Release&, std::vector<uint8_t>*) {}
void EncodeFields(const Ok&, std::vector<uint8_t>*) {}
void EncodeFields(const Ping& m, std::vector<uint8_t>* out) {
  PutU64(out, m.timestamp_ns);
}
void EncodeFields(const Pong& m, std::vector<uint8_t>* out) {
  PutU64(out, m.timestamp_ns);
}
void EncodeFields(const Stats&, std::vector<uint8_t>*) {}
void EncodeFields(const StatsReply& m, std::vector<uint8_t>* out) {
  PutU32(out, m.sequences_in_use);
  PutU32(out, m.max_sequences);
  PutU64(out, m.kv_cache_bytes);
  PutU64(out, m.forwards);
  PutU64(out, m.tokens);
  PutU64(out, m.compute_ns);
  PutU32(out, m.layer_begin);
  PutU32(out, m.layer_end);
  PutU64(out, m.weight_bytes);
  PutU32(out, m.weight_format);
  PutU64(out, m.resident_bytes);
}
void EncodeFields(const ErrorMsg& m, std::vector<uint8_t>* out) {
  PutU16(out, static_cast<uint16_t>(m.code));
  PutBoundedString(out, m.message);
}

// ---- Decoding -------------------------------------------------------------------------------

// Reads one payload's fields and keeps the first problem as a one-line error naming the message
// and the field ("HELLO: truncated at cores: needs 4 bytes but 1 remain"). Every method returns
// false once something is wrong, so field reads chain with &&.
class PayloadReader {
 public:
  PayloadReader(MessageType type, std::span<const uint8_t> payload)
      : message_name_(MessageTypeName(type)), reader_(payload) {}

  bool U8(const char* field, uint8_t* value) { return reader_.GetU8(value) || Short(field, 1); }
  bool U16(const char* field, uint16_t* value) { return reader_.GetU16(value) || Short(field, 2); }
  bool U32(const char* field, uint32_t* value) { return reader_.GetU32(value) || Short(field, 4); }
  bool U64(const char* field, uint64_t* value) { return reader_.GetU64(value) || Short(field, 8); }
  bool Raw32(const char* field, Bytes32* value) {
    return reader_.GetBytes32(*value) || Short(field, value->size());
  }

  bool String(const char* field, std::string* value) {
    uint32_t length;
    if (!U32(field, &length)) return false;
    if (length > kMaxStringBytes) {
      return Fail(std::string(field) + " of " + std::to_string(length) +
                  " bytes exceeds the limit of " + std::to_string(kMaxStringBytes));
    }
    std::span<const uint8_t> bytes;
    if (!reader_.GetBytes(length, &bytes)) return Short(field, length);
    value->assign(bytes.begin(), bytes.end());
    return true;
  }

  bool Flag(const char* field, bool* value) {
    uint8_t byte;
    if (!U8(field, &byte)) return false;
    if (byte > 1) return Fail(std::string(field) + " must be 0 or 1, got " + std::to_string(byte));
    *value = byte == 1;
    return true;
  }

  bool WireDTypeField(const char* field, WireDType* value) {
    uint8_t byte;
    if (!U8(field, &byte)) return false;
    if (byte > static_cast<uint8_t>(WireDType::kF16)) {
      return Fail("unknown " + std::string(field) + " " + std::to_string(byte));
    }
    *value = static_cast<WireDType>(byte);
    return true;
  }

  bool TensorField(net::Tensor* tensor) {
    if (!WireDTypeField("tensor dtype", &tensor->dtype) || !U32("tensor rows", &tensor->rows) ||
        !U32("tensor cols", &tensor->cols)) {
      return false;
    }
    // rows * cols < 2^64 always; its byte size may not be, so compare counts, not bytes, and
    // before allocating anything.
    const uint64_t count = uint64_t{tensor->rows} * tensor->cols;
    const size_t value_bytes = WireValueBytes(tensor->dtype);
    if (count > reader_.remaining() / value_bytes) {
      return Fail("tensor of " + std::to_string(tensor->rows) + " x " +
                  std::to_string(tensor->cols) + " " + WireDTypeName(tensor->dtype) + " needs " +
                  TimesSmall(count, static_cast<unsigned>(value_bytes)) + " bytes but " +
                  std::to_string(reader_.remaining()) + " remain");
    }
    std::span<const uint8_t> bytes;
    reader_.GetBytes(static_cast<size_t>(count) * value_bytes, &bytes);  // cannot fail: checked
    tensor->values.resize(static_cast<size_t>(count));
    const uint8_t* src = bytes.data();
    for (float& value : tensor->values) {
      value = tensor->dtype == WireDType::kF16 ? HalfToFloat(DecodeFixed16(src))
                                               : std::bit_cast<float>(DecodeFixed32(src));
      src += value_bytes;
    }
    return true;
  }

  bool Fail(const std::string& problem) {
    if (status_.ok()) status_ = Status::Error(std::string(message_name_) + ": " + problem);
    return false;
  }

  // The first error, else an error for unread bytes, else OK.
  Status Finish() {
    if (status_.ok() && reader_.remaining() != 0) {
      Fail("trailing " + std::to_string(reader_.remaining()) + " bytes");
    }
    return status_;
  }

 private:
  bool Short(const char* field, size_t needed) {
    return Fail("truncated at " + std::string(field) + ": needs " + std::to_string(needed) +
                " bytes but " + std::to_string(reader_.remaining()) + " remain");
  }

  const char* message_name_;
  Reader reader_;
  Status status_;
};

bool DecodeFields(PayloadReader& in, Hello* m) {
  uint8_t role;
  if (!in.U16("min_version", &m->min_version) || !in.U16("max_version", &m->max_version) ||
      !in.U8("role", &role)) {
    return false;
  }
  if (role > static_cast<uint8_t>(Role::kData)) {
    return in.Fail("unknown role " + std::to_string(role));
  }
  m->role = static_cast<Role>(role);
  if (!in.String("node_name", &m->node_name) || !in.U32("cores", &m->cores) ||
      !in.U64("free_memory_bytes", &m->free_memory_bytes) ||
      !in.U32("max_frame_bytes", &m->max_frame_bytes) ||
      !in.Flag("auth_required", &m->auth_required) || !in.Raw32("nonce", &m->nonce)) {
    return false;
  }
  if (m->min_version > m->max_version) {
    return in.Fail("min_version " + std::to_string(m->min_version) + " > max_version " +
                   std::to_string(m->max_version));
  }
  return true;
}
bool DecodeFields(PayloadReader& in, Auth* m) {
  return in.Raw32("mac", &m->mac);
}
bool DecodeFields(PayloadReader& in, Assign* m) {
  return in.Raw32("fingerprint", &m->fingerprint) && in.U32("n_layer", &m->n_layer) &&
         in.U32("layer_begin", &m->layer_begin) && in.U32("layer_end", &m->layer_end) &&
         in.String("next_hop", &m->next_hop) && in.WireDTypeField("wire_dtype", &m->wire_dtype) &&
         in.U32("max_sequences", &m->max_sequences);
}
bool DecodeFields(PayloadReader& in, Assigned* m) {
  return in.Raw32("fingerprint", &m->fingerprint) && in.U64("weight_bytes", &m->weight_bytes);
}
bool DecodeTimings(PayloadReader& in, std::vector<StageTiming>* timings) {
  uint8_t count = 0;
  if (!in.U8("timing count", &count)) return false;
  if (count > kMaxStageTimings) {
    return in.Fail("timing count " + std::to_string(count) + " exceeds " +
                   std::to_string(kMaxStageTimings));
  }
  timings->resize(count);
  for (StageTiming& timing : *timings) {
    if (!in.U64("queue_ns", &timing.queue_ns) || !in.U64("compute_ns", &timing.compute_ns)) {
      return false;
    }
  }
  return true;
}
bool DecodeFields(PayloadReader& in, Forward* m) {
  return in.U32("first_position", &m->first_position) && in.U32("capacity", &m->capacity) &&
         in.TensorField(&m->activations) && DecodeTimings(in, &m->timings);
}
bool DecodeFields(PayloadReader& in, ResultMsg* m) {
  return in.U32("first_position", &m->first_position) && in.TensorField(&m->activations) &&
         DecodeTimings(in, &m->timings);
}
bool DecodeFields(PayloadReader&, Release*) {
  return true;
}
bool DecodeFields(PayloadReader&, Ok*) {
  return true;
}
bool DecodeFields(PayloadReader& in, Ping* m) {
  return in.U64("timestamp_ns", &m->timestamp_ns);
}
bool DecodeFields(PayloadReader& in, Pong* m) {
  return in.U64("timestamp_ns", &m->timestamp_ns);
}
bool DecodeFields(PayloadReader&, Stats*) {
  return true;
}
bool DecodeFields(PayloadReader& in, StatsReply* m) {
  return in.U32("sequences_in_use", &m->sequences_in_use) &&
         in.U32("max_sequences", &m->max_sequences) &&
         in.U64("kv_cache_bytes", &m->kv_cache_bytes) && in.U64("forwards", &m->forwards) &&
         in.U64("tokens", &m->tokens) && in.U64("compute_ns", &m->compute_ns) &&
         in.U32("layer_begin", &m->layer_begin) && in.U32("layer_end", &m->layer_end) &&
         in.U64("weight_bytes", &m->weight_bytes) && in.U32("weight_format", &m->weight_format) &&
         in.U64("resident_bytes", &m->resident_bytes);
}
bool DecodeFields(PayloadReader& in, ErrorMsg* m) {
  uint16_t code;
  if (!in.U16("code", &code)) return false;
  if (!IsKnownErrorCode(code)) return in.Fail("unknown error code " + std::to_string(code));
  m->code = static_cast<ErrorCode>(code);
  return in.String("message", &m->message);
}

template <typename Fields>
Result<Message> DecodeAs(const FrameHeader& header, std::span<const uint8_t> payload) {
  PayloadReader in(header.type, payload);
  Fields fields;
  (void)DecodeFields(in, &fields);  // Finish() reports the failure
  Status status = in.Finish();
  if (!status.ok()) return status;
  Message message;
  message.flags = header.flags;
  message.request_id = header.request_id;
  message.payload = std::move(fields);
  return message;
}

}  // namespace

const char* MessageTypeName(MessageType type) {
  const auto value = static_cast<uint16_t>(type);
  return IsKnownType(value) ? kMessageTypeNames[value - 1] : "UNKNOWN";
}

const char* ErrorCodeName(ErrorCode code) {
  const auto value = static_cast<uint16_t>(code);
  return IsKnownErrorCode(value) ? kErrorCodeNames[value - 1] : "unknown";
}

MessageType Message::type() const {
  return static_cast<MessageType>(payload.index() + 1);
}

void EncodeMessage(const Message& message, std::vector<uint8_t>* out) {
  const size_t header_at = out->size();
  PutU32(out, kMagic);
  PutU16(out, kProtocolVersion);
  PutU16(out, static_cast<uint16_t>(message.type()));
  PutU32(out, message.flags);
  PutU64(out, message.request_id);
  PutU32(out, 0);  // payload_length, patched once the payload is written
  std::visit([out](const auto& fields) { EncodeFields(fields, out); }, message.payload);
  const size_t payload_length = out->size() - header_at - kHeaderSize;
  assert(payload_length <= UINT32_MAX);  // REQUIRES: the payload fits the u32 length field
  EncodeFixed32(out->data() + header_at + 20, static_cast<uint32_t>(payload_length));
}

Result<FrameHeader> DecodeHeader(std::span<const uint8_t, kHeaderSize> bytes,
                                 uint32_t max_frame_bytes) {
  const uint8_t* p = bytes.data();
  const uint32_t magic = DecodeFixed32(p);
  if (magic != kMagic) return Status::Error("bad magic " + Hex(magic));
  const uint16_t version = DecodeFixed16(p + 4);
  if (version != kProtocolVersion) {
    return Status::Error("unsupported protocol version " + std::to_string(version) +
                         " (this node speaks " + std::to_string(kProtocolVersion) + ")");
  }
  const uint16_t type = DecodeFixed16(p + 6);
  if (!IsKnownType(type)) return Status::Error("unknown message type " + std::to_string(type));

  FrameHeader header;
  header.type = static_cast<MessageType>(type);
  header.flags = DecodeFixed32(p + 8);
  header.request_id = DecodeFixed64(p + 12);
  header.payload_length = DecodeFixed32(p + 20);

  uint32_t known_flags = 0;
  if (header.type == MessageType::kForward) known_flags = kFlagLastChunk | kFlagAllRows;
  if (header.type == MessageType::kAssign) known_flags = kFlagLastStage;
  if ((header.flags & ~known_flags) != 0) {
    return Status::Error(std::string(MessageTypeName(header.type)) + ": unknown flag bits " +
                         Hex(header.flags & ~known_flags));
  }
  if (header.payload_length > max_frame_bytes) {
    return Status::Error("frame payload of " + std::to_string(header.payload_length) +
                         " bytes exceeds the limit of " + std::to_string(max_frame_bytes));
  }
  return header;
}

Result<Message> DecodePayload(const FrameHeader& header, std::span<const uint8_t> payload) {
  const auto type = static_cast<uint16_t>(header.type);
  // A header built by hand rather than by DecodeHeader may hold anything.
  if (!IsKnownType(type)) return Status::Error("unknown message type " + std::to_string(type));
  if (payload.size() != header.payload_length) {
    return Status::Error(std::string(MessageTypeName(header.type)) + ": payload of " +
                         std::to_string(payload.size()) + " bytes but the header says " +
                         std::to_string(header.payload_length));
  }
  switch (header.type) {
    case MessageType::kHello:
      return DecodeAs<Hello>(header, payload);
    case MessageType::kAuth:
      return DecodeAs<Auth>(header, payload);
    case MessageType::kAssign:
      return DecodeAs<Assign>(header, payload);
    case MessageType::kAssigned:
      return DecodeAs<Assigned>(header, payload);
    case MessageType::kForward:
      return DecodeAs<Forward>(header, payload);
    case MessageType::kResult:
      return DecodeAs<ResultMsg>(header, payload);
    case MessageType::kRelease:
      return DecodeAs<Release>(header, payload);
    case MessageType::kOk:
      return DecodeAs<Ok>(header, payload);
    case MessageType::kPing:
      return DecodeAs<Ping>(header, payload);
    case MessageType::kPong:
      return DecodeAs<Pong>(header, payload);
    case MessageType::kStats:
      return DecodeAs<Stats>(header, payload);
    case MessageType::kStatsReply:
      return DecodeAs<StatsReply>(header, payload);
    case MessageType::kError:
      return DecodeAs<ErrorMsg>(header, payload);
  }
  return Status::Error("unknown message type " + std::to_string(type));  // unreachable
}

Result<Message> DecodeFrame(std::span<const uint8_t> frame, uint32_t max_frame_bytes) {
  if (frame.size() < kHeaderSize) {
    return Status::Error("truncated frame: " + std::to_string(frame.size()) +
                         " bytes, a header needs " + std::to_string(kHeaderSize));
  }
  Result<FrameHeader> header = DecodeHeader(frame.first<kHeaderSize>(), max_frame_bytes);
  if (!header.ok()) return header.status();
  const std::span<const uint8_t> rest = frame.subspan(kHeaderSize);
  if (rest.size() < header->payload_length) {
    return Status::Error("truncated frame: " + std::string(MessageTypeName(header->type)) +
                         " payload of " + std::to_string(header->payload_length) + " bytes but " +
                         std::to_string(rest.size()) + " follow the header");
  }
  if (rest.size() > header->payload_length) {
    return Status::Error("trailing " + std::to_string(rest.size() - header->payload_length) +
                         " bytes after the " + MessageTypeName(header->type) + " frame");
  }
  return DecodePayload(*header, rest);
}

}  // namespace dgpt::net
