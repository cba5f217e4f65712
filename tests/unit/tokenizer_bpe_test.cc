// GPT-2 byte-level BPE: round trips, special tokens, the pre-tokenizer on invalid UTF-8, the
// priority-queue BPE against the textbook algorithm, long inputs and concurrent use.
#include <algorithm>
#include <catch2/catch.hpp>
#include <fstream>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "tests/unit/tokenizer_test_util.h"
#include "tokenizer/gpt2_pretokenizer.h"
#include "tokenizer/utf8.h"

namespace dgpt {
namespace {

using testing::DecodeOrDie;

// Random valid UTF-8 mixing ASCII, whitespace, Latin, combining marks, CJK, Hangul and 4-byte
// emoji and supplementary-plane characters.
std::string RandomUtf8(std::mt19937& rng, int length) {
  static const std::vector<std::pair<char32_t, char32_t>> kRanges = {
      {0x20, 0x7E},     {0x20, 0x7E},     {0x20, 0x7E},       {0x09, 0x0D},
      {0xA0, 0x24F},    {0x300, 0x36F},   {0x400, 0x4FF},     {0x600, 0x6FF},
      {0x900, 0x97F},   {0x2000, 0x206F}, {0x3000, 0x30FF},   {0x4E00, 0x9FFF},
      {0xAC00, 0xD7A3}, {0xFE00, 0xFFFD}, {0x1F300, 0x1FAFF}, {0x10000, 0x10FFFF}};
  std::string text;
  for (int i = 0; i < length; ++i) {
    const auto& [low, high] = kRanges[rng() % kRanges.size()];
    const char32_t code_point = low + rng() % (high - low + 1);
    if (code_point >= 0xD800 && code_point <= 0xDFFF) continue;
    AppendUtf8(code_point, &text);
  }
  return text;
}

std::string RandomBytes(std::mt19937& rng, int length) {
  std::string bytes;
  for (int i = 0; i < length; ++i) {
    // Bias towards the bytes that make UTF-8 invalid or incomplete.
    const unsigned value = rng() % 4 == 0 ? 'a' + rng() % 26 : 0x80 + rng() % 128;
    bytes.push_back(static_cast<char>(value));
  }
  return bytes;
}

std::unique_ptr<Tokenizer> TinyTokenizer() {
  return testing::LoadOrDie(testing::WriteTinyBpe(
      "tiny_bpe",
      {{"h", "e"}, {"l", "l"}, {"he", "ll"}, {"hell", "o"}, {" ", "w"}, {"\xF0", "\x9F"}}));
}

TEST_CASE("Round trips of random valid UTF-8", "[tokenizer]") {
  std::mt19937 rng(42);
  const auto tiny = TinyTokenizer();
  const BpeTokenizer* gpt2 = testing::SharedGpt2Tokenizer();
  for (int i = 0; i < 300; ++i) {
    const std::string text = RandomUtf8(rng, 1 + rng() % 60);
    INFO(nlohmann::json(text).dump());
    REQUIRE(IsValidUtf8(text));
    CHECK(DecodeOrDie(*tiny, tiny->Encode(text)) == text);
    if (gpt2 != nullptr) CHECK(DecodeOrDie(*gpt2, gpt2->Encode(text)) == text);
  }
  if (gpt2 == nullptr) WARN("GPT-2 part skipped: ../shared not found");
}

TEST_CASE("Round trips of random invalid byte strings", "[tokenizer]") {
  std::mt19937 rng(7);
  const auto tiny = TinyTokenizer();
  const BpeTokenizer* gpt2 = testing::SharedGpt2Tokenizer();
  for (int i = 0; i < 300; ++i) {
    const std::string bytes = RandomBytes(rng, 1 + rng() % 40) + RandomUtf8(rng, rng() % 5);
    INFO(nlohmann::json(bytes).dump(-1, ' ', true, nlohmann::json::error_handler_t::replace));
    CHECK(DecodeOrDie(*tiny, tiny->Encode(bytes)) == bytes);
    if (gpt2 != nullptr) CHECK(DecodeOrDie(*gpt2, gpt2->Encode(bytes)) == bytes);
  }
  // Every single byte, and NUL in the middle of text.
  for (int byte = 0; byte < 256; ++byte) {
    const std::string text = std::string("a") + static_cast<char>(byte) + "b";
    CHECK(DecodeOrDie(*tiny, tiny->Encode(text)) == text);
  }
}

TEST_CASE("Pre-tokenizer keeps each run of invalid UTF-8 as its own piece", "[tokenizer]") {
  auto pre_tokenizer = Gpt2PreTokenizer::Create();
  REQUIRE(pre_tokenizer.ok());
  const auto split = [&](std::string_view text) {
    std::vector<std::string> pieces;
    (*pre_tokenizer)->Split(text, [&](std::string_view piece) { pieces.emplace_back(piece); });
    return pieces;
  };
  using Pieces = std::vector<std::string>;
  CHECK(split("Hello world's 123  x") == Pieces{"Hello", " world", "'s", " 123", " ", " x"});
  CHECK(split("ab\xFF\xFE"
              "cd") == Pieces{"ab", "\xFF\xFE", "cd"});
  CHECK(split("\x80") == Pieces{"\x80"});
  CHECK(split("a \xC3") == Pieces{"a", " ", "\xC3"});
  CHECK(split("\xED\xA0\x80!") == Pieces{"\xED\xA0\x80", "!"});  // an encoded surrogate
  CHECK(split("").empty());
}

TEST_CASE("Special tokens are matched only when allowed", "[tokenizer]") {
  const auto tiny = TinyTokenizer();
  const TokenId eos = *tiny->eos_id();
  CHECK(eos == tiny->vocab_size() - 1);
  const std::vector<TokenId> with = tiny->Encode("hello<|endoftext|>hello", true);
  CHECK(std::count(with.begin(), with.end(), eos) == 1);
  const std::vector<TokenId> without = tiny->Encode("hello<|endoftext|>hello", false);
  CHECK(std::count(without.begin(), without.end(), eos) == 0);
  CHECK(DecodeOrDie(*tiny, without) == "hello<|endoftext|>hello");
  CHECK(tiny->Encode("<|endoftext|><|endoftext|>") == std::vector<TokenId>{eos, eos});
  const std::vector<TokenId> unfinished = tiny->Encode("<|endoftext|");
  CHECK(std::count(unfinished.begin(), unfinished.end(), eos) == 0);

  DGPT_REQUIRE_SHARED_GPT2_OR_SKIP(gpt2);
  CHECK(gpt2->eos_id() == 50256);
  CHECK(gpt2->vocab_size() == 50257);
  CHECK(gpt2->TokenBytes(50256) == "<|endoftext|>");
  CHECK(gpt2->Encode("hello <|endoftext|>") == std::vector<TokenId>{31373, 220, 50256});
  CHECK(gpt2->Encode("<|endoftext|>", false) ==
        std::vector<TokenId>{27, 91, 437, 1659, 5239, 91, 29});
  CHECK(gpt2->Encode("a<|endoftext|> b", true) == std::vector<TokenId>{64, 50256, 275});
}

// The textbook GPT-2 algorithm (OpenAI's encoder.py): repeatedly merge every occurrence of the
// lowest-ranked adjacent pair. Quadratic, but obviously right.
std::vector<std::string> NaiveBpe(const std::map<std::pair<std::string, std::string>, int>& ranks,
                                  std::vector<std::string> word) {
  while (word.size() > 1) {
    int best_rank = -1;
    std::pair<std::string, std::string> best;
    for (size_t i = 0; i + 1 < word.size(); ++i) {
      const auto it = ranks.find({word[i], word[i + 1]});
      if (it != ranks.end() && (best_rank < 0 || it->second < best_rank)) {
        best_rank = it->second;
        best = it->first;
      }
    }
    if (best_rank < 0) break;
    std::vector<std::string> merged;
    for (size_t i = 0; i < word.size(); ++i) {
      if (i + 1 < word.size() && word[i] == best.first && word[i + 1] == best.second) {
        merged.push_back(best.first + best.second);
        ++i;
      } else {
        merged.push_back(word[i]);
      }
    }
    word = std::move(merged);
  }
  return word;
}

TEST_CASE("Priority-queue BPE agrees with the textbook algorithm", "[tokenizer][shared]") {
  DGPT_REQUIRE_SHARED_GPT2_OR_SKIP(gpt2);
  std::map<std::pair<std::string, std::string>, int> ranks;
  std::ifstream merges(testing::SharedGpt2Dir() + "/merges.txt");
  std::string line;
  std::getline(merges, line);  // #version header
  int rank = 0;
  while (std::getline(merges, line)) {
    const size_t space = line.find(' ');
    if (space != std::string::npos) ranks[{line.substr(0, space), line.substr(space + 1)}] = rank++;
  }
  REQUIRE(ranks.size() == 50000);

  std::mt19937 rng(3);
  // Small alphabets make long merge chains and overlapping candidates ("aaaa", "eee").
  const std::vector<std::string> alphabets = {"a", "ae", "etaoinsrh", "0123456789", " !.", "aeiou"};
  for (int i = 0; i < 2000; ++i) {
    const std::string& alphabet = alphabets[rng() % alphabets.size()];
    std::string word;
    const int length = 1 + rng() % 40;
    for (int j = 0; j < length; ++j) word += alphabet[rng() % alphabet.size()];
    std::vector<std::string> symbols;
    for (const char c : word) symbols.push_back(testing::Spell(std::string(1, c)));
    std::vector<TokenId> expected;
    for (const std::string& token : NaiveBpe(ranks, symbols))
      expected.push_back(*gpt2->TokenToId(token));
    std::vector<TokenId> actual;
    gpt2->EncodeWord(word, &actual);
    INFO(word);
    CHECK(actual == expected);
  }
}

TEST_CASE("Long inputs without spaces or of only spaces encode (no quadratic blowup)",
          "[tokenizer]") {
  // Not timed here: the point is that these finish promptly instead of taking minutes.
  const auto tiny = TinyTokenizer();
  const BpeTokenizer* gpt2 = testing::SharedGpt2Tokenizer();
  for (const std::string& text :
       {std::string(200000, 'a'), std::string(200000, ' '), std::string(100000, ' ') + "x",
        std::string(200000, '\n'), std::string(200000, '7')}) {
    CHECK(DecodeOrDie(*tiny, tiny->Encode(text)) == text);
    if (gpt2 != nullptr) {
      const std::vector<TokenId> ids = gpt2->Encode(text);
      CHECK(ids.size() < text.size() + 1);
      CHECK(DecodeOrDie(*gpt2, ids) == text);
    }
  }
  if (gpt2 != nullptr) {
    CHECK(gpt2->Encode(std::string(200000, 'a')).size() == 50000);  // "aaaa" is one token
  }
}

TEST_CASE("Encode gives the same ids from several threads at once", "[tokenizer][shared]") {
  DGPT_REQUIRE_SHARED_GPT2_OR_SKIP(gpt2);
  std::mt19937 rng(11);
  std::vector<std::string> texts;
  for (int i = 0; i < 200; ++i) texts.push_back(RandomUtf8(rng, 1 + rng() % 40) + " the the");
  std::vector<std::vector<TokenId>> expected;
  for (const std::string& text : texts) expected.push_back(gpt2->Encode(text));

  std::vector<int> mismatches(4, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int round = 0; round < 5; ++round) {
        for (size_t i = 0; i < texts.size(); ++i) {
          if (gpt2->Encode(texts[(i + t * 7) % texts.size()]) !=
              expected[(i + t * 7) % texts.size()]) {
            ++mismatches[t];
          }
        }
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  CHECK(mismatches == std::vector<int>(4, 0));
}

TEST_CASE("Decode rejects ids outside the vocabulary", "[tokenizer]") {
  const auto tiny = TinyTokenizer();
  const std::vector<TokenId> bad = {104, tiny->vocab_size()};
  const auto decoded = tiny->Decode(bad);
  REQUIRE_FALSE(decoded.ok());
  CHECK(decoded.status().message().find("invalid token id") != std::string::npos);
  CHECK_FALSE(tiny->Decode(std::vector<TokenId>{-1}).ok());
  CHECK(DecodeOrDie(*tiny, {}).empty());
}

}  // namespace
}  // namespace dgpt
