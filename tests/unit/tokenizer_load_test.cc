// Loading: which tokenizer a model folder gets, and one-line errors naming the file at fault.
#include <catch2/catch.hpp>
#include <string>

#include "tests/unit/tokenizer_test_util.h"

namespace dgpt {
namespace {

using testing::WriteFile;

// The load error for `dir`, checked to be a single line.
std::string LoadError(const std::string& dir) {
  auto loaded = LoadTokenizer(dir);
  REQUIRE_FALSE(loaded.ok());
  const std::string message = loaded.status().message();
  CHECK(message.find('\n') == std::string::npos);
  return message;
}

// A working tiny BPE folder whose files the tests then break one at a time.
std::string TinyBpeDir(const std::string& name) {
  return testing::WriteTinyBpe(name, {{"a", "b"}, {"ab", "c"}});
}

bool Contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

TEST_CASE("A folder with vocab.json and merges.txt loads as BPE", "[tokenizer]") {
  const auto tokenizer = testing::LoadOrDie(TinyBpeDir("load_ok"));
  CHECK(tokenizer->vocab_size() == 256 + 2 + 1);
  CHECK(tokenizer->eos_id() == 258);
  CHECK(tokenizer->Encode("abc") == std::vector<TokenId>{257});
  CHECK(tokenizer->TokenBytes(' ') == " ");
  CHECK(tokenizer->TokenBytes(256) == "ab");
}

TEST_CASE("The shared GPT-2 files load", "[tokenizer][shared]") {
  DGPT_REQUIRE_SHARED_GPT2_OR_SKIP(gpt2);
  auto loaded = LoadTokenizer(testing::SharedGpt2Dir());
  REQUIRE(loaded.ok());
  CHECK((*loaded)->vocab_size() == 50257);
  CHECK((*loaded)->Encode("Hello world") == std::vector<TokenId>{15496, 995});
}

TEST_CASE("Missing folders and files are named", "[tokenizer]") {
  const std::string missing = std::string(DGPT_TEST_TMP) + "/no_such_model";
  CHECK(LoadError(missing) == missing + ": not a directory");

  const std::string empty = testing::MakeTempDir("load_empty");
  CHECK(LoadError(empty) ==
        empty + ": no tokenizer found (expected vocab.json + merges.txt, or tokenizer.model)");

  const std::string no_merges = TinyBpeDir("load_no_merges");
  std::filesystem::remove(no_merges + "/merges.txt");
  CHECK(LoadError(no_merges) == no_merges + "/merges.txt: cannot open: No such file or directory");

  const std::string no_vocab = TinyBpeDir("load_no_vocab");
  std::filesystem::remove(no_vocab + "/vocab.json");
  CHECK(LoadError(no_vocab) == no_vocab + "/vocab.json: cannot open: No such file or directory");
}

TEST_CASE("Bad vocab.json gives a one-line error naming it", "[tokenizer]") {
  const std::string dir = TinyBpeDir("load_bad_vocab");
  const std::string vocab = dir + "/vocab.json";

  WriteFile(vocab, "{\"a\": 0,\n");
  std::string error = LoadError(dir);
  CHECK(error.starts_with(vocab + ": invalid JSON: "));

  WriteFile(vocab, "[1, 2, 3]");
  CHECK(LoadError(dir) == vocab + ": expected a non-empty JSON object mapping tokens to ids");

  WriteFile(vocab, R"({"a": "zero"})");
  CHECK(LoadError(dir) == vocab + ": the id of token \"a\" is not an integer");

  WriteFile(vocab, R"({"a": 0, "b": 0})");
  CHECK(Contains(LoadError(dir), "id 0 is used twice"));

  WriteFile(vocab, R"({"a": 0, "b": 7})");
  CHECK(Contains(LoadError(dir), "token \"b\" has id 7, outside 0..1"));

  WriteFile(vocab, R"({"a": 0, "b": 1})");
  CHECK(LoadError(dir) == vocab + ": no token for byte 0x00 (\"Ā\"); byte-level BPE needs all 256");
}

TEST_CASE("Bad merges.txt lines give the file and line number", "[tokenizer]") {
  const std::string dir = TinyBpeDir("load_bad_merges");
  const std::string merges = dir + "/merges.txt";

  WriteFile(merges, "#version: 0.2\na b\nab c d\n");
  CHECK(LoadError(dir) ==
        merges + ":3: expected two tokens separated by one space, got \"ab c d\"");

  WriteFile(merges, "#version: 0.2\nab\n");
  CHECK(Contains(LoadError(dir), merges + ":2: expected two tokens"));

  WriteFile(merges, "a b\nx y\n");  // "xy" was never added to the vocabulary
  CHECK(LoadError(dir) == merges + ":2: token \"xy\" is not in the vocabulary");

  WriteFile(merges, "a b\nzz y\n");
  CHECK(LoadError(dir) == merges + ":2: token \"zz\" is not in the vocabulary");

  // Blank lines, a missing header and Windows line ends are all fine.
  WriteFile(merges, "\r\na b\r\n\r\nab c\r\n\n");
  const auto tokenizer = testing::LoadOrDie(dir);
  CHECK(tokenizer->Encode("abc") == std::vector<TokenId>{257});
}

}  // namespace
}  // namespace dgpt
