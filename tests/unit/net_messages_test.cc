// Tests for net/messages.h, in the style of leveldb's log_test: encode a valid frame, corrupt it
// in memory (a byte, a length, a truncation) and check the decoder refuses it with the exact
// one-line error. Ends with seeded random buffers and mutations that must never crash, and
// must re-encode byte for byte whenever they decode.
#include "net/messages.h"

#include <algorithm>
#include <bit>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <new>
#include <random>
#include <string>
#include <vector>

#include "base/half.h"
#include "net/coding.h"

// Records the largest single allocation so tests can prove a hostile length never reaches the
// allocator. Replacing the global operator new is the standard hook for that; every non-aligned
// new/delete is replaced so that pairs always match (ASan checks), and noinline keeps GCC from
// seeing free() meet operator new (-Wmismatched-new-delete).
namespace {
size_t largest_allocation = 0;

[[gnu::noinline]] void* CountedAllocate(size_t size) noexcept {
  largest_allocation = std::max(largest_allocation, size);
  return std::malloc(size == 0 ? 1 : size);
}
}  // namespace

[[gnu::noinline]] void* operator new(size_t size) {
  if (void* p = CountedAllocate(size)) return p;
  throw std::bad_alloc();
}
[[gnu::noinline]] void* operator new[](size_t size) {
  if (void* p = CountedAllocate(size)) return p;
  throw std::bad_alloc();
}
void* operator new(size_t size, const std::nothrow_t&) noexcept {
  return CountedAllocate(size);
}
void* operator new[](size_t size, const std::nothrow_t&) noexcept {
  return CountedAllocate(size);
}
[[gnu::noinline]] void operator delete(void* p) noexcept {
  std::free(p);
}
[[gnu::noinline]] void operator delete[](void* p) noexcept {
  std::free(p);
}
[[gnu::noinline]] void operator delete(void* p, size_t) noexcept {
  std::free(p);
}
[[gnu::noinline]] void operator delete[](void* p, size_t) noexcept {
  std::free(p);
}
void operator delete(void* p, const std::nothrow_t&) noexcept {
  std::free(p);
}
void operator delete[](void* p, const std::nothrow_t&) noexcept {
  std::free(p);
}

namespace dgpt::net {
namespace {

using Bytes = std::vector<uint8_t>;

Bytes Encode(const Message& message) {
  Bytes frame;
  EncodeMessage(message, &frame);
  return frame;
}

// A frame with a hand-made payload, for payloads the encoder would never write.
Bytes RawFrame(MessageType type, const Bytes& payload, uint32_t flags = 0,
               uint64_t request_id = 77) {
  Bytes frame;
  PutU32(&frame, kMagic);
  PutU16(&frame, kProtocolVersion);
  PutU16(&frame, static_cast<uint16_t>(type));
  PutU32(&frame, flags);
  PutU64(&frame, request_id);
  PutU32(&frame, static_cast<uint32_t>(payload.size()));
  frame.insert(frame.end(), payload.begin(), payload.end());
  return frame;
}

// "OK" or the error message.
std::string DecodeError(const Bytes& frame, uint32_t max_frame_bytes = kDefaultMaxFrameBytes) {
  Result<Message> decoded = DecodeFrame(frame, max_frame_bytes);
  return decoded.ok() ? "OK" : decoded.status().message();
}

void SetU16(Bytes* frame, size_t offset, uint16_t value) {
  (*frame)[offset] = static_cast<uint8_t>(value);
  (*frame)[offset + 1] = static_cast<uint8_t>(value >> 8);
}
void SetU32(Bytes* frame, size_t offset, uint32_t value) {
  EncodeFixed32(frame->data() + offset, value);
}
void FixPayloadLength(Bytes* frame) {
  SetU32(frame, 20, static_cast<uint32_t>(frame->size() - kHeaderSize));
}

Bytes32 Pattern32(uint8_t seed) {
  Bytes32 bytes;
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<uint8_t>(seed * 31 + i * 7);
  return bytes;
}

uint32_t Bits(float value) {
  return std::bit_cast<uint32_t>(value);
}

// f32 values that only survive a bit-exact codec.
std::vector<float> TrickyFloats() {
  return {1.5f,
          -0.0f,
          std::bit_cast<float>(0x7fc12345u),  // quiet NaN with a payload
          std::bit_cast<float>(0xffa00001u),  // negative signalling NaN
          std::bit_cast<float>(0x00000001u),  // smallest denormal
          std::bit_cast<float>(0x807fffffu),  // largest negative denormal
          std::numeric_limits<float>::infinity(),
          -std::numeric_limits<float>::max(),
          0.1f};
}

Tensor MakeTensor(WireDType dtype, uint32_t rows, uint32_t cols, uint32_t seed) {
  Tensor tensor{dtype, rows, cols, {}};
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 4.0f);
  tensor.values.resize(size_t{rows} * cols);
  for (float& value : tensor.values) value = normal(rng);
  const std::vector<float> tricky = TrickyFloats();
  std::copy_n(tricky.begin(), std::min(tricky.size(), tensor.values.size()), tensor.values.begin());
  return tensor;
}

Hello SampleHello() {
  Hello hello;
  hello.min_version = 1;
  hello.max_version = 3;
  hello.role = Role::kData;
  hello.node_name = "worker-2.rack7 \xc3\xa9";
  hello.cores = 96;
  hello.free_memory_bytes = 0x0123456789abcdefull;
  hello.max_frame_bytes = 1u << 20;
  hello.auth_required = true;
  hello.nonce = Pattern32(1);
  return hello;
}
Assign SampleAssign() {
  return Assign{Pattern32(2), 48, 12, 24, "10.0.0.3:7070", WireDType::kF16, 64};
}
StatsReply SampleStatsReply() {
  return StatsReply{
      3,  64, 0x1122334455667788ull, 1ull << 40, 123456789012ull,      0xfedcba9876543210ull,
      12, 24, 0x0102030405060708ull, 2,          0x8877665544332211ull};
}

// One message of every type, with field values that would expose swapped or truncated fields.
std::vector<Message> SampleMessages() {
  return {
      Message{0, 1, SampleHello()},
      Message{0, 2, Auth{Pattern32(3)}},
      Message{kFlagLastStage, 3, SampleAssign()},
      Message{0, 4, Assigned{Pattern32(4), 497759232}},
      Message{kFlagLastChunk | kFlagAllRows, 0xdeadbeefcafef00dull,
              Forward{17, 1024, MakeTensor(WireDType::kF32, 3, 5, 1), {}}},
      Message{0, 6, ResultMsg{4096, MakeTensor(WireDType::kF16, 2, 3, 2), {}}},
      Message{0, 0xffffffffffffffffull, Release{}},
      Message{0, 8, Ok{}},
      Message{0, 9, Ping{1718000000123456789ull}},
      Message{0, 10, Pong{42}},
      Message{0, 11, Stats{}},
      Message{0, 12, SampleStatsReply()},
      Message{0, 13, ErrorMsg{ErrorCode::kWrongModel, "fingerprint ab12 != cd34"}},
  };
}

// Encodes, decodes, checks the header fields and that re-encoding gives the same bytes; returns
// the decoded payload for field-by-field checks.
template <typename T>
T RoundTrip(const Message& message) {
  const Bytes frame = Encode(message);
  Result<Message> decoded = DecodeFrame(frame, kDefaultMaxFrameBytes);
  INFO(MessageTypeName(message.type()));
  REQUIRE(decoded.ok());
  CHECK(decoded->type() == message.type());
  CHECK(decoded->flags == message.flags);
  CHECK(decoded->request_id == message.request_id);
  CHECK(Encode(*decoded) == frame);
  REQUIRE(std::holds_alternative<T>(decoded->payload));
  return std::get<T>(decoded->payload);
}

void CheckTensorBits(const Tensor& actual, const Tensor& sent) {
  CHECK(actual.dtype == sent.dtype);
  CHECK(actual.rows == sent.rows);
  CHECK(actual.cols == sent.cols);
  REQUIRE(actual.values.size() == sent.values.size());
  for (size_t i = 0; i < sent.values.size(); ++i) {
    // f32 travels bit-exact; f16 comes back exactly as the f16 conversion rounds it.
    const float expected =
        sent.dtype == WireDType::kF32 ? sent.values[i] : HalfToFloat(FloatToHalf(sent.values[i]));
    INFO("value " << i << ": " << sent.values[i]);
    CHECK(Bits(actual.values[i]) == Bits(expected));
  }
}

// ---- Round trips --------------------------------------------------------------------------

TEST_CASE("HELLO round trips", "[net][messages]") {
  const Hello sent = SampleHello();
  const Hello got = RoundTrip<Hello>(Message{0, 1, sent});
  CHECK(got.min_version == 1);
  CHECK(got.max_version == 3);
  CHECK(got.role == Role::kData);
  CHECK(got.node_name == sent.node_name);
  CHECK(got.cores == 96);
  CHECK(got.free_memory_bytes == 0x0123456789abcdefull);
  CHECK(got.max_frame_bytes == 1u << 20);
  CHECK(got.auth_required);
  CHECK(got.nonce == sent.nonce);

  Hello defaults;  // empty name, control role, no auth
  const Hello got_defaults = RoundTrip<Hello>(Message{0, 0, defaults});
  CHECK(got_defaults.node_name.empty());
  CHECK(got_defaults.role == Role::kControl);
  CHECK_FALSE(got_defaults.auth_required);
}

TEST_CASE("AUTH round trips", "[net][messages]") {
  CHECK(RoundTrip<Auth>(Message{0, 5, Auth{Pattern32(9)}}).mac == Pattern32(9));
}

TEST_CASE("ASSIGN round trips", "[net][messages]") {
  const Assign got = RoundTrip<Assign>(Message{kFlagLastStage, 3, SampleAssign()});
  CHECK(got.fingerprint == Pattern32(2));
  CHECK(got.n_layer == 48);
  CHECK(got.layer_begin == 12);
  CHECK(got.layer_end == 24);
  CHECK(got.next_hop == "10.0.0.3:7070");
  CHECK(got.wire_dtype == WireDType::kF16);
  CHECK(got.max_sequences == 64);
}

TEST_CASE("ASSIGNED round trips", "[net][messages]") {
  const Assigned got = RoundTrip<Assigned>(Message{0, 4, Assigned{Pattern32(4), 497759232}});
  CHECK(got.fingerprint == Pattern32(4));
  CHECK(got.weight_bytes == 497759232);
}

TEST_CASE("FORWARD round trips f32 activations bit for bit", "[net][messages]") {
  const Tensor sent = MakeTensor(WireDType::kF32, 4, 7, 11);
  const Forward got = RoundTrip<Forward>(Message{kFlagLastChunk, 99, Forward{0, 2048, sent, {}}});
  CHECK(got.first_position == 0);
  CHECK(got.capacity == 2048);
  CheckTensorBits(got.activations, sent);
  CHECK(std::signbit(got.activations.values[1]));  // -0.0 stays negative
  CHECK(Bits(got.activations.values[2]) == 0x7fc12345);
  CHECK(Bits(got.activations.values[4]) == 0x00000001);
}

TEST_CASE("FORWARD round trips f16 activations rounded as the conversion says", "[net][messages]") {
  Tensor sent = MakeTensor(WireDType::kF16, 3, 8, 12);
  sent.values[9] = 70000.0f;                       // overflows to inf
  sent.values[10] = 1.0f + std::ldexp(1.0f, -11);  // tie: rounds to 1.0
  sent.values[11] = std::ldexp(1.0f, -24);         // smallest half subnormal
  const Forward got = RoundTrip<Forward>(Message{kFlagAllRows, 5, Forward{31, 64, sent, {}}});
  CheckTensorBits(got.activations, sent);
  CHECK(got.activations.values[8] == HalfToFloat(0x2e66));  // 0.1f
  CHECK(std::isinf(got.activations.values[9]));
  CHECK(got.activations.values[10] == 1.0f);
  CHECK(got.activations.values[11] == std::ldexp(1.0f, -24));
  CHECK(std::isnan(got.activations.values[2]));
}

TEST_CASE("FORWARD round trips an empty tensor", "[net][messages]") {
  const Tensor empty{WireDType::kF32, 0, 768, {}};
  const Forward got = RoundTrip<Forward>(Message{0, 5, Forward{3, 4, empty, {}}});
  CHECK(got.activations.rows == 0);
  CHECK(got.activations.cols == 768);
  CHECK(got.activations.values.empty());
}

TEST_CASE("RESULT round trips", "[net][messages]") {
  const Tensor sent = MakeTensor(WireDType::kF16, 1, 33, 13);
  const ResultMsg got = RoundTrip<ResultMsg>(Message{0, 6, ResultMsg{4095, sent, {}}});
  CHECK(got.first_position == 4095);
  CheckTensorBits(got.activations, sent);
}

TEST_CASE("empty messages round trip with their request id", "[net][messages]") {
  RoundTrip<Release>(Message{0, 0xffffffffffffffffull, Release{}});
  RoundTrip<Ok>(Message{0, 1234567, Ok{}});
  RoundTrip<Stats>(Message{0, 0, Stats{}});
  CHECK(Encode(Message{0, 1, Ok{}}).size() == kHeaderSize);
}

TEST_CASE("PING and PONG round trip", "[net][messages]") {
  CHECK(RoundTrip<Ping>(Message{0, 9, Ping{1718000000123456789ull}}).timestamp_ns ==
        1718000000123456789ull);
  CHECK(RoundTrip<Pong>(Message{0, 9, Pong{0xffffffffffffffffull}}).timestamp_ns ==
        0xffffffffffffffffull);
}

TEST_CASE("STATS_REPLY round trips", "[net][messages]") {
  const StatsReply got = RoundTrip<StatsReply>(Message{0, 12, SampleStatsReply()});
  CHECK(got.sequences_in_use == 3);
  CHECK(got.max_sequences == 64);
  CHECK(got.kv_cache_bytes == 0x1122334455667788ull);
  CHECK(got.forwards == 1ull << 40);
  CHECK(got.tokens == 123456789012ull);
  CHECK(got.compute_ns == 0xfedcba9876543210ull);
  CHECK(got.layer_begin == 12);
  CHECK(got.layer_end == 24);
  CHECK(got.weight_bytes == 0x0102030405060708ull);
  CHECK(got.weight_format == 2);
  CHECK(got.resident_bytes == 0x8877665544332211ull);
}

TEST_CASE("ERROR round trips every code", "[net][messages]") {
  for (uint16_t code = 1; code <= 9; ++code) {
    const ErrorMsg got = RoundTrip<ErrorMsg>(
        Message{0, code, ErrorMsg{static_cast<ErrorCode>(code), std::string(code * 100, 'e')}});
    CHECK(static_cast<uint16_t>(got.code) == code);
    CHECK(got.message == std::string(code * 100, 'e'));
  }
}

TEST_CASE("every sample message round trips and has its own type", "[net][messages]") {
  const std::vector<Message> samples = SampleMessages();
  REQUIRE(samples.size() == 13);
  for (size_t i = 0; i < samples.size(); ++i) {
    CHECK(static_cast<size_t>(samples[i].type()) == i + 1);
    const Bytes frame = Encode(samples[i]);
    Result<Message> decoded = DecodeFrame(frame, kDefaultMaxFrameBytes);
    INFO(MessageTypeName(samples[i].type()));
    REQUIRE(decoded.ok());
    CHECK(Encode(*decoded) == frame);
  }
}

TEST_CASE("a PING frame has exactly the documented bytes", "[net][messages]") {
  const Bytes frame = Encode(Message{0, 0x0102030405060708ull, Ping{0x1112131415161718ull}});
  const Bytes expected = {
      'D',  'G',  'P',  'T',                           // magic
      0x01, 0x00,                                      // version 1
      0x09, 0x00,                                      // type PING
      0x00, 0x00, 0x00, 0x00,                          // flags
      0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01,  // request_id
      0x08, 0x00, 0x00, 0x00,                          // payload_length
      0x18, 0x17, 0x16, 0x15, 0x14, 0x13, 0x12, 0x11,  // timestamp_ns
  };
  CHECK(frame == expected);
}

TEST_CASE("a FORWARD frame lays out flags and the tensor as documented", "[net][messages]") {
  const Tensor tensor{WireDType::kF16, 1, 2, {1.0f, -2.0f}};
  const Bytes frame = Encode(Message{kFlagLastChunk, 7, Forward{5, 16, tensor, {}}});
  const Bytes payload(frame.begin() + kHeaderSize, frame.end());
  CHECK(frame[8] == 0x01);
  CHECK(payload == Bytes{5,    0,    0,    0,    16, 0, 0, 0,  // first_position, capacity
                         1,                                    // dtype f16
                         1,    0,    0,    0,    2,  0, 0, 0,  // rows, cols
                         0x00, 0x3c, 0x00, 0xc0,               // 1.0, -2.0
                         0});                                  // no stage timings yet
}

TEST_CASE("stage timings travel with FORWARD and RESULT", "[net][messages]") {
  const Tensor tensor{WireDType::kF32, 1, 1, {0.5f}};
  const std::vector<StageTiming> timings = {{1, 2}, {0xffffffffffull, 3}};
  CHECK(RoundTrip<Forward>(Message{0, 3, Forward{1, 8, tensor, timings}}).timings == timings);
  CHECK(RoundTrip<ResultMsg>(Message{0, 3, ResultMsg{1, tensor, timings}}).timings == timings);
  Bytes frame = Encode(Message{0, 3, ResultMsg{1, tensor, {}}});
  frame.back() = 65;  // a count past the limit, with no entries behind it
  Result<Message> decoded = DecodeFrame(frame, kDefaultMaxFrameBytes);
  REQUIRE_FALSE(decoded.ok());
  CHECK_THAT(decoded.status().message(), Catch::Contains("timing count 65 exceeds 64"));
}

TEST_CASE("EncodeMessage appends to what the buffer already holds", "[net][messages]") {
  Bytes buffer = {0xaa, 0xbb};
  EncodeMessage(Message{0, 1, Ping{2}}, &buffer);
  EncodeMessage(Message{0, 3, Pong{4}}, &buffer);
  REQUIRE(buffer.size() == 2 + 2 * (kHeaderSize + 8));
  const Bytes second(buffer.begin() + 2 + kHeaderSize + 8, buffer.end());
  Result<Message> decoded = DecodeFrame(second, kDefaultMaxFrameBytes);
  REQUIRE(decoded.ok());
  CHECK(std::get<Pong>(decoded->payload).timestamp_ns == 4);
  const Bytes first(buffer.begin() + 2, buffer.begin() + 2 + kHeaderSize + 8);
  CHECK(DecodeError(first) == "OK");
}

TEST_CASE("overlong strings are cut to the limit at a character boundary", "[net][messages]") {
  ErrorMsg long_error{ErrorCode::kInternal, std::string(5000, 'x')};
  CHECK(RoundTrip<ErrorMsg>(Message{0, 1, long_error}).message ==
        std::string(kMaxStringBytes, 'x'));

  // A two-byte character straddling byte 4096 is dropped whole.
  Hello hello;
  hello.node_name = std::string(kMaxStringBytes - 1, 'n') + "\xc3\xa9" + "tail";
  const Bytes frame = Encode(Message{0, 1, hello});
  Result<Message> decoded = DecodeFrame(frame, kDefaultMaxFrameBytes);
  REQUIRE(decoded.ok());
  CHECK(std::get<Hello>(decoded->payload).node_name == std::string(kMaxStringBytes - 1, 'n'));

  hello.node_name = std::string(kMaxStringBytes, 'n');  // exactly at the limit: kept whole
  decoded = DecodeFrame(Encode(Message{0, 1, hello}), kDefaultMaxFrameBytes);
  REQUIRE(decoded.ok());
  CHECK(std::get<Hello>(decoded->payload).node_name.size() == kMaxStringBytes);
}

TEST_CASE("names of types and error codes", "[net][messages]") {
  CHECK(std::string(MessageTypeName(MessageType::kHello)) == "HELLO");
  CHECK(std::string(MessageTypeName(MessageType::kStatsReply)) == "STATS_REPLY");
  CHECK(std::string(MessageTypeName(MessageType::kError)) == "ERROR");
  CHECK(std::string(MessageTypeName(static_cast<MessageType>(0))) == "UNKNOWN");
  CHECK(std::string(MessageTypeName(static_cast<MessageType>(14))) == "UNKNOWN");
  CHECK(std::string(ErrorCodeName(ErrorCode::kBadFrame)) == "bad_frame");
  CHECK(std::string(ErrorCodeName(ErrorCode::kCacheFull)) == "cache_full");
  CHECK(std::string(ErrorCodeName(ErrorCode::kShuttingDown)) == "shutting_down");
  CHECK(std::string(ErrorCodeName(static_cast<ErrorCode>(0))) == "unknown");
  CHECK(std::string(ErrorCodeName(static_cast<ErrorCode>(10))) == "unknown");
}

// ---- Header corruption ----------------------------------------------------------------------

TEST_CASE("BadMagic", "[net][messages]") {
  Bytes frame = Encode(Message{0, 1, Ping{1}});
  SetU32(&frame, 0, 0x12345678);
  CHECK(DecodeError(frame) == "bad magic 0x12345678");
  frame = Encode(Message{0, 1, Ping{1}});
  frame[3] = 'U';  // "DGPU"
  CHECK(DecodeError(frame) == "bad magic 0x55504744");
}

TEST_CASE("WrongVersion", "[net][messages]") {
  Bytes frame = Encode(Message{0, 1, Ping{1}});
  SetU16(&frame, 4, 2);
  CHECK(DecodeError(frame) == "unsupported protocol version 2 (this node speaks 1)");
  SetU16(&frame, 4, 0);
  CHECK(DecodeError(frame) == "unsupported protocol version 0 (this node speaks 1)");
}

TEST_CASE("UnknownType", "[net][messages]") {
  Bytes frame = Encode(Message{0, 1, Ok{}});
  SetU16(&frame, 6, 0);
  CHECK(DecodeError(frame) == "unknown message type 0");
  SetU16(&frame, 6, 14);
  CHECK(DecodeError(frame) == "unknown message type 14");
  SetU16(&frame, 6, 0xffff);
  CHECK(DecodeError(frame) == "unknown message type 65535");
}

TEST_CASE("UnknownFlagBits", "[net][messages]") {
  const Tensor tensor{WireDType::kF32, 1, 1, {2.0f}};
  Bytes forward = Encode(Message{kFlagLastChunk | kFlagAllRows, 1, Forward{0, 8, tensor, {}}});
  CHECK(DecodeError(forward) == "OK");
  SetU32(&forward, 8, kFlagLastChunk | 0x4);
  CHECK(DecodeError(forward) == "FORWARD: unknown flag bits 0x00000004");
  SetU32(&forward, 8, 0x80000000);
  CHECK(DecodeError(forward) == "FORWARD: unknown flag bits 0x80000000");

  // ASSIGN has one flag.
  Bytes assign = Encode(Message{kFlagLastStage, 1, SampleAssign()});
  CHECK(DecodeError(assign) == "OK");
  SetU32(&assign, 8, kFlagLastStage | kFlagAllRows);
  CHECK(DecodeError(assign) == "ASSIGN: unknown flag bits 0x00000002");

  // No other message has flags at all.
  Bytes ping = Encode(Message{0, 1, Ping{1}});
  SetU32(&ping, 8, kFlagLastChunk);
  CHECK(DecodeError(ping) == "PING: unknown flag bits 0x00000001");
  Bytes result = Encode(Message{0, 1, ResultMsg{0, tensor, {}}});
  SetU32(&result, 8, kFlagAllRows);
  CHECK(DecodeError(result) == "RESULT: unknown flag bits 0x00000002");
}

TEST_CASE("OversizedPayloadLength", "[net][messages]") {
  Bytes frame = Encode(Message{0, 1, Ok{}});
  SetU32(&frame, 20, 100000000);
  CHECK(DecodeError(frame) == "frame payload of 100000000 bytes exceeds the limit of 67108864");
  // The limit is the receiver's own: a 1 KiB limit refuses a 1025-byte payload...
  const Bytes payload(1025, 0);
  CHECK(DecodeError(RawFrame(MessageType::kOk, payload), 1024) ==
        "frame payload of 1025 bytes exceeds the limit of 1024");
  // ...and the length check comes before the payload is looked at.
  CHECK(DecodeError(RawFrame(MessageType::kOk, Bytes(1024, 0)), 1024) == "OK: trailing 1024 bytes");
}

TEST_CASE("HeaderClaiming4GiBIsRefusedByDecodeHeaderAloneWithoutAllocating", "[net][messages]") {
  Bytes header = Encode(Message{0, 1, Ok{}});
  REQUIRE(header.size() == kHeaderSize);
  SetU32(&header, 20, 0xffffffff);
  largest_allocation = 0;
  Result<FrameHeader> decoded = DecodeHeader(
      std::span<const uint8_t, kHeaderSize>(header.data(), kHeaderSize), kDefaultMaxFrameBytes);
  const size_t allocated = largest_allocation;
  REQUIRE_FALSE(decoded.ok());
  CHECK(decoded.status().message() ==
        "frame payload of 4294967295 bytes exceeds the limit of 67108864");
  CHECK(allocated < 256);  // only the error message
}

TEST_CASE("DecodeHeader returns the header fields", "[net][messages]") {
  const Tensor tensor{WireDType::kF32, 1, 2, {1.0f, 2.0f}};
  const Bytes frame =
      Encode(Message{kFlagAllRows, 0x0abcdef012345678ull, Forward{1, 2, tensor, {}}});
  Result<FrameHeader> header = DecodeHeader(
      std::span<const uint8_t, kHeaderSize>(frame.data(), kHeaderSize), kDefaultMaxFrameBytes);
  REQUIRE(header.ok());
  CHECK(header->type == MessageType::kForward);
  CHECK(header->flags == kFlagAllRows);
  CHECK(header->request_id == 0x0abcdef012345678ull);
  CHECK(header->payload_length == frame.size() - kHeaderSize);
  // DecodePayload takes the rest.
  Result<Message> message =
      DecodePayload(*header, std::span<const uint8_t>(frame).subspan(kHeaderSize));
  REQUIRE(message.ok());
  CHECK(std::get<Forward>(message->payload).activations.values[1] == 2.0f);
}

TEST_CASE("DecodePayloadWithTheWrongNumberOfBytes", "[net][messages]") {
  FrameHeader header{MessageType::kPing, 0, 1, 8};
  const Bytes four(4, 0);
  Result<Message> decoded = DecodePayload(header, four);
  REQUIRE_FALSE(decoded.ok());
  CHECK(decoded.status().message() == "PING: payload of 4 bytes but the header says 8");

  header.type = static_cast<MessageType>(99);  // a header not made by DecodeHeader
  decoded = DecodePayload(header, four);
  REQUIRE_FALSE(decoded.ok());
  CHECK(decoded.status().message() == "unknown message type 99");
}

TEST_CASE("TruncatedFrameAtEveryLength", "[net][messages]") {
  for (const Message& message : SampleMessages()) {
    const Bytes frame = Encode(message);
    const std::string name = MessageTypeName(message.type());
    for (size_t length = 0; length < frame.size(); ++length) {
      const Bytes prefix(frame.begin(), frame.begin() + static_cast<ptrdiff_t>(length));
      const std::string error = DecodeError(prefix);
      INFO(name << " cut to " << length << " of " << frame.size() << " bytes");
      if (length < kHeaderSize) {
        CHECK(error == "truncated frame: " + std::to_string(length) + " bytes, a header needs 24");
      } else {
        CHECK(error == "truncated frame: " + name + " payload of " +
                           std::to_string(frame.size() - kHeaderSize) + " bytes but " +
                           std::to_string(length - kHeaderSize) + " follow the header");
      }
    }
  }
}

TEST_CASE("TruncatedPayloadWithAMatchingLengthIsMalformed", "[net][messages]") {
  // A shorter payload that its header agrees with: fails inside the payload, at a named field.
  for (const Message& message : SampleMessages()) {
    const Bytes frame = Encode(message);
    const std::string name = MessageTypeName(message.type());
    for (size_t length = kHeaderSize; length < frame.size(); ++length) {
      Bytes prefix(frame.begin(), frame.begin() + static_cast<ptrdiff_t>(length));
      FixPayloadLength(&prefix);
      const std::string error = DecodeError(prefix);
      INFO(name << " payload cut to " << length - kHeaderSize << " bytes: " << error);
      CHECK(error.rfind(name + ": ", 0) == 0);
      CHECK(error.find('\n') == std::string::npos);
    }
  }
  Bytes ping = Encode(Message{0, 1, Ping{1}});
  ping.resize(kHeaderSize + 4);
  FixPayloadLength(&ping);
  CHECK(DecodeError(ping) == "PING: truncated at timestamp_ns: needs 8 bytes but 4 remain");
}

TEST_CASE("TrailingBytes", "[net][messages]") {
  // Inside the payload: the header counts the extra bytes.
  Bytes hello = Encode(Message{0, 1, SampleHello()});
  hello.insert(hello.end(), {1, 2, 3});
  FixPayloadLength(&hello);
  CHECK(DecodeError(hello) == "HELLO: trailing 3 bytes");

  Bytes ok = RawFrame(MessageType::kOk, {0});
  CHECK(DecodeError(ok) == "OK: trailing 1 bytes");

  // A tensor with more values than rows * cols.
  Bytes forward =
      Encode(Message{0, 1, Forward{0, 8, Tensor{WireDType::kF32, 2, 3, {1, 2, 3, 4, 5, 6}}, {}}});
  PutF32(&forward, 7.0f);
  FixPayloadLength(&forward);
  CHECK(DecodeError(forward) == "FORWARD: trailing 4 bytes");

  // After the frame: the buffer holds more than the header announces.
  Bytes ping = Encode(Message{0, 1, Ping{1}});
  ping.insert(ping.end(), {9, 9, 9});
  CHECK(DecodeError(ping) == "trailing 3 bytes after the PING frame");
}

// ---- Payload corruption ---------------------------------------------------------------------

Bytes HelloPayload(uint16_t min_version, uint16_t max_version, uint8_t role, uint32_t name_length,
                   const std::string& name, uint8_t auth_required) {
  Bytes payload;
  PutU16(&payload, min_version);
  PutU16(&payload, max_version);
  PutU8(&payload, role);
  PutU32(&payload, name_length);
  payload.insert(payload.end(), name.begin(), name.end());
  PutU32(&payload, 8);           // cores
  PutU64(&payload, 1ull << 33);  // free_memory_bytes
  PutU32(&payload, kDefaultMaxFrameBytes);
  PutU8(&payload, auth_required);
  PutBytes32(&payload, Pattern32(5));
  return payload;
}

TEST_CASE("a hand-written HELLO payload decodes", "[net][messages]") {
  CHECK(DecodeError(RawFrame(MessageType::kHello, HelloPayload(1, 1, 0, 3, "abc", 0))) == "OK");
}

TEST_CASE("StringTooLong", "[net][messages]") {
  const std::string name(kMaxStringBytes + 1, 'a');
  CHECK(DecodeError(RawFrame(MessageType::kHello, HelloPayload(1, 1, 0, 4097, name, 0))) ==
        "HELLO: node_name of 4097 bytes exceeds the limit of 4096");
  // Refused from the length alone, before looking for the bytes.
  CHECK(DecodeError(RawFrame(MessageType::kHello, HelloPayload(1, 1, 0, 0xffffffff, "", 0))) ==
        "HELLO: node_name of 4294967295 bytes exceeds the limit of 4096");
  const std::string at_limit(kMaxStringBytes, 'a');
  CHECK(DecodeError(RawFrame(MessageType::kHello, HelloPayload(1, 1, 0, 4096, at_limit, 0))) ==
        "OK");

  Bytes error;
  PutU16(&error, 8);
  PutString(&error, std::string(5000, 'e'));
  CHECK(DecodeError(RawFrame(MessageType::kError, error)) ==
        "ERROR: message of 5000 bytes exceeds the limit of 4096");
}

TEST_CASE("StringRunsPastTheEnd", "[net][messages]") {
  Bytes assign;
  PutBytes32(&assign, Pattern32(1));
  PutU32(&assign, 12);
  PutU32(&assign, 0);
  PutU32(&assign, 6);
  PutU32(&assign, 100);  // next_hop length
  assign.insert(assign.end(), {'h', 'o', 's', 't'});
  CHECK(DecodeError(RawFrame(MessageType::kAssign, assign)) ==
        "ASSIGN: truncated at next_hop: needs 100 bytes but 4 remain");
}

TEST_CASE("UnknownRole", "[net][messages]") {
  CHECK(DecodeError(RawFrame(MessageType::kHello, HelloPayload(1, 1, 2, 1, "a", 0))) ==
        "HELLO: unknown role 2");
}

TEST_CASE("AuthRequiredThatIsNotABoolean", "[net][messages]") {
  CHECK(DecodeError(RawFrame(MessageType::kHello, HelloPayload(1, 1, 1, 1, "a", 2))) ==
        "HELLO: auth_required must be 0 or 1, got 2");
}

TEST_CASE("HelloMinVersionAboveMaxVersion", "[net][messages]") {
  CHECK(DecodeError(RawFrame(MessageType::kHello, HelloPayload(3, 2, 0, 0, "", 1))) ==
        "HELLO: min_version 3 > max_version 2");
  CHECK(DecodeError(RawFrame(MessageType::kHello, HelloPayload(2, 2, 0, 0, "", 1))) == "OK");
}

TEST_CASE("UnknownWireDType", "[net][messages]") {
  Bytes assign = Encode(Message{0, 1, SampleAssign()});
  // wire_dtype sits right after next_hop: 32 + 3*4 + 4 + 13 bytes into the payload.
  const size_t wire_dtype_at = kHeaderSize + 32 + 12 + 4 + SampleAssign().next_hop.size();
  REQUIRE(assign[wire_dtype_at] == 1);
  assign[wire_dtype_at] = 2;
  CHECK(DecodeError(assign) == "ASSIGN: unknown wire_dtype 2");
}

TEST_CASE("UnknownErrorCode", "[net][messages]") {
  Bytes error = Encode(Message{0, 1, ErrorMsg{ErrorCode::kInternal, "boom"}});
  SetU16(&error, kHeaderSize, 0);
  CHECK(DecodeError(error) == "ERROR: unknown error code 0");
  SetU16(&error, kHeaderSize, 10);
  CHECK(DecodeError(error) == "ERROR: unknown error code 10");
}

Bytes TensorPayload(uint8_t dtype, uint32_t rows, uint32_t cols, size_t value_bytes) {
  Bytes payload;
  PutU32(&payload, 0);   // first_position
  PutU32(&payload, 16);  // capacity
  PutU8(&payload, dtype);
  PutU32(&payload, rows);
  PutU32(&payload, cols);
  payload.resize(payload.size() + value_bytes, 0x3c);
  return payload;
}

TEST_CASE("UnknownTensorDType", "[net][messages]") {
  CHECK(DecodeError(RawFrame(MessageType::kForward, TensorPayload(2, 1, 1, 4))) ==
        "FORWARD: unknown tensor dtype 2");
}

TEST_CASE("TensorSizeMismatch", "[net][messages]") {
  CHECK(DecodeError(RawFrame(MessageType::kForward, TensorPayload(0, 1000, 1000, 12))) ==
        "FORWARD: tensor of 1000 x 1000 f32 needs 4000000 bytes but 12 remain");
  CHECK(DecodeError(RawFrame(MessageType::kForward, TensorPayload(1, 2, 3, 11))) ==
        "FORWARD: tensor of 2 x 3 f16 needs 12 bytes but 11 remain");
  Bytes complete = TensorPayload(1, 2, 3, 12);
  complete.push_back(0);  // no stage timings
  CHECK(DecodeError(RawFrame(MessageType::kForward, complete)) == "OK");
  complete.push_back(0);
  CHECK(DecodeError(RawFrame(MessageType::kForward, complete)) == "FORWARD: trailing 1 bytes");
  // RESULT has no capacity field: strip it.
  Bytes result = TensorPayload(0, 3, 3, 8);
  result.erase(result.begin() + 4, result.begin() + 8);
  CHECK(DecodeError(RawFrame(MessageType::kResult, result)) ==
        "RESULT: tensor of 3 x 3 f32 needs 36 bytes but 8 remain");
}

TEST_CASE("TensorRowsTimesColsOverflowIsRefusedWithoutAllocating", "[net][messages]") {
  largest_allocation = 0;
  // 2^31 * 2^31 * 4 bytes is exactly 2^64: a 64-bit byte count would wrap to 0.
  CHECK(DecodeError(RawFrame(MessageType::kForward, TensorPayload(0, 1u << 31, 1u << 31, 0))) ==
        "FORWARD: tensor of 2147483648 x 2147483648 f32 needs 18446744073709551616 bytes but 0 "
        "remain");
  CHECK(DecodeError(RawFrame(MessageType::kForward, TensorPayload(0, 0xffffffff, 0xffffffff, 8))) ==
        "FORWARD: tensor of 4294967295 x 4294967295 f32 needs 73786976260478468100 bytes but 8 "
        "remain");
  CHECK(DecodeError(RawFrame(MessageType::kForward, TensorPayload(1, 0x80000000, 2, 0))) ==
        "FORWARD: tensor of 2147483648 x 2 f16 needs 8589934592 bytes but 0 remain");
  CHECK(largest_allocation < 1024);
}

TEST_CASE("TruncatedTensorHeader", "[net][messages]") {
  Bytes payload = TensorPayload(0, 1, 1, 0);
  payload.resize(payload.size() - 2);  // cols cut in half
  CHECK(DecodeError(RawFrame(MessageType::kForward, payload)) ==
        "FORWARD: truncated at tensor cols: needs 4 bytes but 2 remain");
}

TEST_CASE("ShortFixedFields", "[net][messages]") {
  CHECK(DecodeError(RawFrame(MessageType::kAuth, Bytes(31, 0))) ==
        "AUTH: truncated at mac: needs 32 bytes but 31 remain");
  CHECK(DecodeError(RawFrame(MessageType::kStatsReply, Bytes(67, 0))) ==
        "STATS_REPLY: truncated at resident_bytes: needs 8 bytes but 7 remain");
  CHECK(DecodeError(RawFrame(MessageType::kHello, {})) ==
        "HELLO: truncated at min_version: needs 2 bytes but 0 remain");
}

// ---- Random input ---------------------------------------------------------------------------

// Decoding must fail cleanly (one-line error) or succeed with a message that encodes back to
// exactly the input: the encoding is canonical, so there is no second way to write a message.
void CheckDecodesCleanlyOrRoundTrips(const Bytes& frame, uint32_t max_frame_bytes) {
  Result<Message> decoded = DecodeFrame(frame, max_frame_bytes);
  if (decoded.ok()) {
    REQUIRE(Encode(*decoded) == frame);
  } else {
    REQUIRE(!decoded.status().message().empty());
    REQUIRE(decoded.status().message().find('\n') == std::string::npos);
  }
}

TEST_CASE("random byte buffers never crash the decoder", "[net][messages][random]") {
  std::mt19937 rng(1234);
  std::uniform_int_distribution<int> byte(0, 255);
  for (int i = 0; i < 3000; ++i) {
    Bytes buffer(rng() % 200);
    for (uint8_t& b : buffer) b = static_cast<uint8_t>(byte(rng));
    // Most buffers die at the magic; give half of them a valid header prefix so the random
    // bytes reach the payload decoders.
    if (i % 2 == 1 && buffer.size() >= kHeaderSize) {
      SetU32(&buffer, 0, kMagic);
      SetU16(&buffer, 4, kProtocolVersion);
      SetU16(&buffer, 6, static_cast<uint16_t>(1 + rng() % 13));
      // Mostly no flags; sometimes the bits FORWARD and ASSIGN may carry.
      SetU32(&buffer, 8, rng() % 4 == 0 ? static_cast<uint32_t>(rng() % 4) : 0);
      FixPayloadLength(&buffer);
    }
    INFO("buffer " << i);
    CheckDecodesCleanlyOrRoundTrips(buffer, kDefaultMaxFrameBytes);
  }
}

TEST_CASE("random mutations of valid frames never crash the decoder", "[net][messages][random]") {
  std::mt19937 rng(5678);
  const std::vector<Message> samples = SampleMessages();
  int decoded_ok = 0;
  for (const Message& message : samples) {
    const Bytes original = Encode(message);
    for (int i = 0; i < 400; ++i) {
      Bytes frame = original;
      const int edits = 1 + static_cast<int>(rng() % 3);
      for (int e = 0; e < edits; ++e) {
        const size_t at = frame.empty() ? 0 : rng() % frame.size();
        switch (rng() % 5) {
          case 0:
            if (!frame.empty()) frame[at] ^= static_cast<uint8_t>(1u << (rng() % 8));
            break;
          case 1:
            if (!frame.empty()) frame[at] = static_cast<uint8_t>(rng());
            break;
          case 2:
            frame.insert(frame.begin() + static_cast<ptrdiff_t>(at), static_cast<uint8_t>(rng()));
            break;
          case 3:
            if (!frame.empty()) frame.erase(frame.begin() + static_cast<ptrdiff_t>(at));
            break;
          case 4:
            frame.resize(at);
            break;
        }
      }
      // Usually keep the length field honest, so the edit is judged by the payload decoder.
      if (rng() % 4 != 0 && frame.size() >= kHeaderSize) FixPayloadLength(&frame);
      INFO(MessageTypeName(message.type()) << " mutation " << i);
      CheckDecodesCleanlyOrRoundTrips(frame, kDefaultMaxFrameBytes);
      if (DecodeFrame(frame, kDefaultMaxFrameBytes).ok()) ++decoded_ok;
    }
  }
  CHECK(decoded_ok > 0);  // some mutations (in values, ids) stay valid: the check above ran
}

}  // namespace
}  // namespace dgpt::net
