// Writes one valid frame per message type (plus FORWARD variants) into a directory, as the seed
// corpus for frame_fuzzer. Generated at test time so the seeds always match the encoder.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "net/messages.h"

namespace {

using namespace dgpt::net;

Bytes32 Pattern(uint8_t seed) {
  Bytes32 bytes;
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<uint8_t>(seed + 13 * i);
  return bytes;
}

std::vector<Message> Seeds() {
  Hello hello;
  hello.min_version = 1;
  hello.max_version = 2;
  hello.role = Role::kData;
  hello.node_name = "worker-1";
  hello.cores = 8;
  hello.free_memory_bytes = 16ull << 30;
  hello.auth_required = true;
  hello.nonce = Pattern(1);
  const Tensor f32{WireDType::kF32, 2, 3, {1.0f, -0.0f, 0.5f, 3.25f, -7.0f, 1e-40f}};
  const Tensor f16{WireDType::kF16, 1, 4, {1.0f, -2.0f, 65504.0f, 0.1f}};
  return {
      Message{0, 1, hello},
      Message{0, 2, Auth{Pattern(2)}},
      Message{kFlagLastStage, 3,
              Assign{Pattern(3), 12, 6, 12, "127.0.0.1:7001", WireDType::kF16, 4}},
      Message{0, 4, Assigned{Pattern(3), 248000000}},
      Message{kFlagLastChunk, 5, Forward{0, 64, f32, {{1, 2}}}},
      Message{kFlagLastChunk | kFlagAllRows, 5, Forward{2, 64, f16, {}}},
      Message{0, 5, ResultMsg{3, f16, {{10, 20}, {30, 40}}}},
      Message{0, 5, Release{}},
      Message{0, 6, Ok{}},
      Message{0, 7, Ping{123456789}},
      Message{0, 7, Pong{123456789}},
      Message{0, 8, Stats{}},
      Message{0, 8, StatsReply{1, 4, 1 << 20, 10, 100, 5000000, 6, 12, 1 << 24, 0, 1 << 25}},
      Message{0, 9, ErrorMsg{ErrorCode::kCacheFull, "4 sequences in use"}},
  };
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s OUTPUT_DIR\n", argv[0]);
    return 2;
  }
  const std::filesystem::path dir = argv[1];
  std::error_code error;
  std::filesystem::create_directories(dir, error);
  if (error) {
    std::fprintf(stderr, "cannot create %s: %s\n", dir.c_str(), error.message().c_str());
    return 1;
  }
  int index = 0;
  for (const Message& message : Seeds()) {
    std::vector<uint8_t> frame;
    EncodeMessage(message, &frame);
    const auto path = dir / (std::to_string(index++) + "_" + MessageTypeName(message.type()));
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(frame.data()),
              static_cast<std::streamsize>(frame.size()));
    if (!out) {
      std::fprintf(stderr, "cannot write %s\n", path.c_str());
      return 1;
    }
  }
  std::printf("wrote %d seed frames to %s\n", index, dir.c_str());
  return 0;
}
