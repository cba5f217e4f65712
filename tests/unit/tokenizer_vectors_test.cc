// The GPT-2 tokenizer against ids produced by independent implementations (Hugging Face,
// tiktoken). See ../shared/testdata/README.md for the file formats.
#include <catch2/catch.hpp>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "tests/unit/tokenizer_test_util.h"

namespace dgpt {
namespace {

struct Case {
  std::string text;
  std::vector<TokenId> ids;
};

std::string ReadAll(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  REQUIRE(file);
  std::stringstream buffer;
  buffer << file.rdbuf();
  return buffer.str();
}

std::vector<TokenId> ParseIds(std::string text) {
  for (char& c : text) {
    if (c == ',') c = ' ';
  }
  std::istringstream in(text);
  std::vector<TokenId> ids;
  TokenId id = 0;
  while (in >> id) ids.push_back(id);
  return ids;
}

std::vector<std::string> SplitOn(const std::string& text, const std::string& separator) {
  std::vector<std::string> parts;
  size_t pos = 0;
  while (true) {
    const size_t end = text.find(separator, pos);
    if (end == std::string::npos) {
      parts.push_back(text.substr(pos));
      return parts;
    }
    parts.push_back(text.substr(pos, end - pos));
    pos = end + separator.size();
  }
}

std::vector<Case> LoadLlamaCppCases() {
  const std::string dir = testing::SharedTestDataDir();
  std::string inputs = ReadAll(dir + "/llamacpp-gpt2.inp");
  const std::string separator = "\n__ggml_vocab_test__\n";
  REQUIRE(inputs.ends_with(separator));
  inputs.resize(inputs.size() - separator.size());
  const std::vector<std::string> texts = SplitOn(inputs, separator);
  std::string outputs = ReadAll(dir + "/llamacpp-gpt2.out");
  if (outputs.ends_with('\n')) outputs.pop_back();
  const std::vector<std::string> id_lines = SplitOn(outputs, "\n");
  REQUIRE(texts.size() == id_lines.size());
  std::vector<Case> cases;
  for (size_t i = 0; i < texts.size(); ++i) cases.push_back({texts[i], ParseIds(id_lines[i])});
  return cases;
}

std::vector<Case> LoadGgmlCases() {
  std::istringstream lines(ReadAll(testing::SharedTestDataDir() + "/ggml-gpt2.txt"));
  std::vector<Case> cases;
  std::string line;
  while (std::getline(lines, line)) {
    if (line.empty()) continue;
    const size_t arrow = line.rfind(" => ");
    REQUIRE(arrow != std::string::npos);
    cases.push_back({line.substr(0, arrow), ParseIds(line.substr(arrow + 4))});
  }
  return cases;
}

std::vector<Case> LoadTiktokenCases() {
  const auto json =
      nlohmann::json::parse(ReadAll(testing::SharedTestDataDir() + "/tiktoken-gpt2.json"));
  std::vector<Case> cases;
  for (const auto& entry : json.at("cases")) {
    cases.push_back(
        {entry.at("text").get<std::string>(), entry.at("ids").get<std::vector<TokenId>>()});
  }
  return cases;
}

// Checks every case and that decoding gives the text back; returns how many matched.
size_t CheckCases(const Tokenizer& tokenizer, const std::vector<Case>& cases) {
  size_t matched = 0;
  for (size_t i = 0; i < cases.size(); ++i) {
    const Case& c = cases[i];
    INFO("case " << i << ": " << nlohmann::json(c.text).dump());
    const std::vector<TokenId> ids = tokenizer.Encode(c.text);
    CHECK(ids == c.ids);
    CHECK(testing::DecodeOrDie(tokenizer, ids) == c.text);
    if (ids == c.ids) ++matched;
  }
  return matched;
}

TEST_CASE("GPT-2 BPE matches the llama.cpp (Hugging Face) vectors", "[tokenizer][shared]") {
  DGPT_REQUIRE_SHARED_GPT2_OR_SKIP(tokenizer);
  const std::vector<Case> cases = LoadLlamaCppCases();
  CHECK(cases.size() == 46);
  CHECK(CheckCases(*tokenizer, cases) == cases.size());
}

TEST_CASE("GPT-2 BPE matches the ggml (Hugging Face) vectors", "[tokenizer][shared]") {
  DGPT_REQUIRE_SHARED_GPT2_OR_SKIP(tokenizer);
  const std::vector<Case> cases = LoadGgmlCases();
  CHECK(cases.size() == 100);
  CHECK(CheckCases(*tokenizer, cases) == cases.size());
}

TEST_CASE("GPT-2 BPE matches the tiktoken vectors", "[tokenizer][shared]") {
  DGPT_REQUIRE_SHARED_GPT2_OR_SKIP(tokenizer);
  const std::vector<Case> cases = LoadTiktokenCases();
  CHECK(cases.size() == 20);
  CHECK(CheckCases(*tokenizer, cases) == cases.size());
}

}  // namespace
}  // namespace dgpt
