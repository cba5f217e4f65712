// SentencePiece models through the Tokenizer interface, on a tiny model trained here.
#include <catch2/catch.hpp>
#include <string>
#include <vector>

#include "tests/unit/tokenizer_test_util.h"
#include "tokenizer/utf8.h"

#ifdef DGPT_HAVE_SENTENCEPIECE_TRAINER
#include <sentencepiece_trainer.h>
#endif

namespace dgpt {
namespace {

TEST_CASE("A broken tokenizer.model gives a one-line error naming it", "[tokenizer]") {
  const std::string dir = testing::MakeTempDir("spm_broken");
  testing::WriteFile(dir + "/tokenizer.model", "this is not a protobuf");
  auto loaded = LoadTokenizer(dir);
  REQUIRE_FALSE(loaded.ok());
  const std::string& message = loaded.status().message();
  CHECK(message.starts_with(dir + "/tokenizer.model: not a valid SentencePiece model"));
  CHECK(message.find('\n') == std::string::npos);
}

#ifdef DGPT_HAVE_SENTENCEPIECE_TRAINER

// Trains (once) a small BPE model with byte fallback on generated sentences; returns its folder.
// Identity normalization and kept whitespace make round trips exact for any valid UTF-8.
std::string TrainTinyModel() {
  static const std::string dir = [] {
    const std::string dir = testing::MakeTempDir("spm_model");
    std::string corpus;
    const std::vector<std::string> words = {"the",   "cat",  "sat",  "on",   "mat",  "a",
                                            "dog",   "ran",  "far",  "away", "from", "home",
                                            "naïve", "café", "日本", "語"};
    for (int i = 0; i < 2000; ++i) {
      corpus += words[(i * 7) % words.size()] + " " + words[(i * 13 + 1) % words.size()] + " " +
                words[(i * 3 + 2) % words.size()] + ".\n";
    }
    testing::WriteFile(dir + "/corpus.txt", corpus);
    const auto status = sentencepiece::SentencePieceTrainer::Train(
        "--input=" + dir + "/corpus.txt --model_prefix=" + dir +
        "/tokenizer --vocab_size=300 --model_type=bpe --byte_fallback=true"
        " --character_coverage=1.0 --normalization_rule_name=identity"
        " --remove_extra_whitespaces=false --minloglevel=2");
    if (!status.ok()) throw std::runtime_error("training failed: " + status.ToString());
    return dir;
  }();
  return dir;
}

TEST_CASE("SentencePiece: tokenizer.model loads and round-trips text", "[tokenizer][spm]") {
  const auto tokenizer = testing::LoadOrDie(TrainTinyModel());
  CHECK(tokenizer->vocab_size() == 300);
  REQUIRE(tokenizer->eos_id().has_value());
  CHECK(tokenizer->TokenBytes(*tokenizer->eos_id()) == "</s>");

  for (const std::string text :
       {"the cat sat on the mat.", "a dog ran far away from home", "naïve café 日本語",
        "  two  spaces ", "unseen: Zebra \xF0\x9F\x99\x82 \xE2\x82\xAC 42!", ""}) {
    INFO(text);
    const std::vector<TokenId> ids = tokenizer->Encode(text);
    CHECK(testing::DecodeOrDie(*tokenizer, ids) == text);
  }
}

TEST_CASE("SentencePiece: TokenBytes maps ▁ to space and <0xAB> pieces to bytes",
          "[tokenizer][spm]") {
  const auto tokenizer = testing::LoadOrDie(TrainTinyModel());
  // The emoji is not in the training text, so byte fallback spells it byte by byte.
  const std::string smile = "\xF0\x9F\x99\x82";
  const std::vector<TokenId> ids = tokenizer->Encode("cat" + smile, false);
  std::vector<std::string> bytes;
  for (const TokenId id : ids) bytes.push_back(tokenizer->TokenBytes(id));
  REQUIRE(bytes.size() >= 4);
  CHECK(bytes[0].starts_with(" "));  // the model's dummy prefix: "▁cat" or "▁" + "cat"
  CHECK(std::vector<std::string>(bytes.end() - 4, bytes.end()) ==
        std::vector<std::string>{"\xF0", "\x9F", "\x99", "\x82"});

  // Streaming holds the emoji's bytes until the last one arrives.
  StreamingDecoder decoder(*tokenizer);
  std::string streamed;
  for (size_t i = 0; i < ids.size(); ++i) {
    const std::string chunk = decoder.Push(ids[i]);
    CHECK(IsValidUtf8(chunk));
    if (i + 1 == ids.size()) CHECK(chunk == smile);
    streamed += chunk;
  }
  CHECK(decoder.Flush().empty());
  CHECK(streamed == " cat" + smile);
}

TEST_CASE("SentencePiece: control pieces in text are special only when allowed",
          "[tokenizer][spm]") {
  const auto tokenizer = testing::LoadOrDie(TrainTinyModel());
  const TokenId eos = *tokenizer->eos_id();
  const std::vector<TokenId> with = tokenizer->Encode("the cat</s>", true);
  REQUIRE_FALSE(with.empty());
  CHECK(with.back() == eos);
  const std::vector<TokenId> without = tokenizer->Encode("the cat</s>", false);
  CHECK(std::find(without.begin(), without.end(), eos) == without.end());
  CHECK(testing::DecodeOrDie(*tokenizer, without) == "the cat</s>");
}

#else

TEST_CASE("SentencePiece: trained-model tests", "[tokenizer][spm]") {
  WARN("skipped: libsentencepiece_train / sentencepiece_trainer.h not installed");
}

#endif

}  // namespace
}  // namespace dgpt
