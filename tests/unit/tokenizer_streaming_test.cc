// StreamingDecoder and the UTF-8 helper it relies on.
#include <algorithm>
#include <catch2/catch.hpp>
#include <random>
#include <string>
#include <vector>

#include "tests/unit/tokenizer_test_util.h"
#include "tokenizer/utf8.h"

namespace dgpt {
namespace {

TEST_CASE("IncompleteUtf8TailLength holds back only what can still complete", "[tokenizer]") {
  CHECK(IncompleteUtf8TailLength("") == 0);
  CHECK(IncompleteUtf8TailLength("abc") == 0);
  CHECK(IncompleteUtf8TailLength("a\xF0") == 1);
  CHECK(IncompleteUtf8TailLength("a\xF0\x9F") == 2);
  CHECK(IncompleteUtf8TailLength("a\xF0\x9F\x99") == 3);
  CHECK(IncompleteUtf8TailLength("a\xF0\x9F\x99\x82") == 0);  // complete
  CHECK(IncompleteUtf8TailLength("\xE2\x82") == 2);
  CHECK(IncompleteUtf8TailLength("\xC3") == 1);
  // Can never become valid: released at once.
  CHECK(IncompleteUtf8TailLength("\x80") == 0);          // stray continuation byte
  CHECK(IncompleteUtf8TailLength("\xFF") == 0);          // not a UTF-8 byte
  CHECK(IncompleteUtf8TailLength("\xC0") == 0);          // overlong lead
  CHECK(IncompleteUtf8TailLength("\xF5") == 0);          // beyond U+10FFFF
  CHECK(IncompleteUtf8TailLength("\xE0\x80") == 0);      // overlong 3-byte form
  CHECK(IncompleteUtf8TailLength("\xED\xA0") == 0);      // surrogate
  CHECK(IncompleteUtf8TailLength("\xF4\x90") == 0);      // beyond U+10FFFF
  CHECK(IncompleteUtf8TailLength("\xF0\x9F\x41") == 0);  // broken by an ASCII byte
  CHECK(IncompleteUtf8TailLength("\x9F\x99\x82") == 0);  // continuations without a lead

  CHECK(IsValidUtf8("h\xC3\xA9llo \xF0\x9F\x99\x82"));
  CHECK_FALSE(IsValidUtf8("\xF0\x9F\x99"));
  CHECK_FALSE(IsValidUtf8("\xED\xA0\x80"));
}

// Pushes every id and returns the chunks, with what Flush returned as the last one.
std::vector<std::string> Stream(const Tokenizer& tokenizer, const std::vector<TokenId>& ids) {
  StreamingDecoder decoder(tokenizer);
  std::vector<std::string> chunks;
  for (const TokenId id : ids) chunks.push_back(decoder.Push(id));
  chunks.push_back(decoder.Flush());
  return chunks;
}

std::unique_ptr<Tokenizer> EmojiSplittingTokenizer() {
  // "🙂" is F0 9F 99 82: these merges make it two tokens, F0 9F and 99 82.
  return testing::LoadOrDie(
      testing::WriteTinyBpe("streaming_bpe", {{"\xF0", "\x9F"}, {"\x99", "\x82"}}));
}

TEST_CASE("StreamingDecoder holds a split emoji until it is complete", "[tokenizer]") {
  const auto tokenizer = EmojiSplittingTokenizer();
  const std::vector<TokenId> ids = tokenizer->Encode("\xF0\x9F\x99\x82");
  REQUIRE(ids.size() == 2);
  CHECK(Stream(*tokenizer, ids) == std::vector<std::string>{"", "\xF0\x9F\x99\x82", ""});

  // One byte at a time, between ASCII.
  const std::vector<TokenId> bytes = {'a', 0xF0, 0x9F, 0x99, 0x82, 'b'};
  CHECK(Stream(*tokenizer, bytes) ==
        std::vector<std::string>{"a", "", "", "", "\xF0\x9F\x99\x82", "b", ""});
}

TEST_CASE("StreamingDecoder releases bytes that can never become valid", "[tokenizer]") {
  const auto tokenizer = EmojiSplittingTokenizer();
  using Chunks = std::vector<std::string>;
  CHECK(Stream(*tokenizer, {0xFF, 'a'}) == Chunks{"\xFF", "a", ""});
  CHECK(Stream(*tokenizer, {0x80}) == Chunks{"\x80", ""});
  CHECK(Stream(*tokenizer, {0xC0, 0x80}) == Chunks{"\xC0", "\x80", ""});
  // A started character broken by ASCII: both go out, verbatim, with the ASCII byte.
  CHECK(Stream(*tokenizer, {0xE2, 0x82, 'x'}) == Chunks{"", "", "\xE2\x82x", ""});
  CHECK(Stream(*tokenizer, {0xED, 0xA0}) == Chunks{"", "\xED\xA0", ""});
  // Flush hands back an unfinished character verbatim.
  CHECK(Stream(*tokenizer, {'o', 'k', 0xF0, 0x9F}) == Chunks{"o", "k", "", "", "\xF0\x9F"});
}

// Where each character of `bytes` starts, counting every invalid byte as a character of its
// own, plus bytes.size().
std::vector<size_t> CharacterStarts(const std::string& bytes) {
  std::vector<size_t> starts;
  size_t pos = 0;
  while (pos < bytes.size()) {
    starts.push_back(pos);
    size_t length = 1;
    for (size_t candidate = 1; candidate <= 4 && pos + candidate <= bytes.size(); ++candidate) {
      if (IsValidUtf8(std::string_view(bytes).substr(pos, candidate))) {
        length = candidate;
        break;
      }
    }
    pos += length;
  }
  starts.push_back(bytes.size());
  return starts;
}

TEST_CASE("StreamingDecoder chunks add up to Decode for random token streams", "[tokenizer]") {
  const auto tokenizer = EmojiSplittingTokenizer();
  std::mt19937 rng(5);
  for (int i = 0; i < 500; ++i) {
    std::vector<TokenId> ids;
    for (int j = 0, n = rng() % 20; j < n; ++j) ids.push_back(rng() % tokenizer->vocab_size());
    const std::vector<std::string> chunks = Stream(*tokenizer, ids);
    std::string joined;
    std::vector<size_t> boundaries;
    for (const std::string& chunk : chunks) {
      joined += chunk;
      boundaries.push_back(joined.size());
    }
    CHECK(joined == testing::DecodeOrDie(*tokenizer, ids));
    // No chunk boundary falls inside a valid character of the whole stream.
    const std::vector<size_t> starts = CharacterStarts(joined);
    for (const size_t boundary : boundaries) {
      CHECK(std::binary_search(starts.begin(), starts.end(), boundary));
    }
  }
}

TEST_CASE("StreamingDecoder on GPT-2 tokens of emoji", "[tokenizer][shared]") {
  DGPT_REQUIRE_SHARED_GPT2_OR_SKIP(gpt2);
  const std::string smile = "\xF0\x9F\x99\x82";
  const std::vector<TokenId> ids = gpt2->Encode(smile);
  REQUIRE(ids.size() >= 2);  // GPT-2 has no single token for it
  for (const TokenId id : ids) CHECK(gpt2->TokenBytes(id).size() < smile.size());
  std::vector<std::string> expected(ids.size() + 1);
  expected[ids.size() - 1] = smile;
  CHECK(Stream(*gpt2, ids) == expected);

  const std::string text = "Hi \xF0\x9F\x99\x82\xF0\x9F\x98\xB6\xE2\x80\x8D\xF0\x9F\x8C\xAB ok";
  std::string joined;
  for (const std::string& chunk : Stream(*gpt2, gpt2->Encode(text))) {
    CHECK(IsValidUtf8(chunk));
    joined += chunk;
  }
  CHECK(joined == text);
}

}  // namespace
}  // namespace dgpt
