// libFuzzer target for the frame decoder: any input must decode cleanly or fail with a one-line
// error, and whatever decodes must encode back to exactly the input bytes (the encoding is
// canonical, so a mismatch means the decoder accepted something it should not have, or lost a
// field). Sanitizers catch out-of-bounds reads, overflow and oversized allocations.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <span>
#include <string>
#include <vector>

#include "net/messages.h"

namespace {
constexpr uint32_t kFuzzMaxFrameBytes = 1u << 20;
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace dgpt::net;
  const std::span<const uint8_t> input(data, size);
  dgpt::Result<Message> decoded = DecodeFrame(input, kFuzzMaxFrameBytes);
  if (!decoded.ok()) {
    const std::string& error = decoded.status().message();
    if (error.empty() || error.find('\n') != std::string::npos) {
      std::fprintf(stderr, "error is not one non-empty line: '%s'\n", error.c_str());
      std::abort();
    }
    return 0;
  }
  std::vector<uint8_t> encoded;
  EncodeMessage(*decoded, &encoded);
  if (encoded.size() != size || !std::equal(encoded.begin(), encoded.end(), input.begin())) {
    std::fprintf(stderr, "%s frame of %zu bytes re-encodes to %zu different bytes\n",
                 MessageTypeName(decoded->type()), size, encoded.size());
    std::abort();
  }
  return 0;
}
