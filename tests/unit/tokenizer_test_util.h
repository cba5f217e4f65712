// Helpers shared by the tokenizer tests: the GPT-2 files in ../shared, and tiny hand-made
// byte-level BPE vocabularies written to the build tree.
#pragma once

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "tokenizer/bpe.h"
#include "tokenizer/byte_unicode.h"
#include "tokenizer/tokenizer.h"

namespace dgpt::testing {

inline std::string SharedGpt2Dir() {
  return std::string(DGPT_SHARED_DIR) + "/gpt2-tokenizer";
}
inline std::string SharedTestDataDir() {
  return std::string(DGPT_SHARED_DIR) + "/testdata/tokenizer";
}

// The real GPT-2 tokenizer from ../shared, loaded once; nullptr when ../shared is absent.
inline const BpeTokenizer* SharedGpt2Tokenizer() {
  static const std::unique_ptr<BpeTokenizer> tokenizer = []() -> std::unique_ptr<BpeTokenizer> {
    if (!std::filesystem::exists(SharedGpt2Dir() + "/vocab.json")) return nullptr;
    auto loaded =
        BpeTokenizer::Load(SharedGpt2Dir() + "/vocab.json", SharedGpt2Dir() + "/merges.txt");
    if (!loaded.ok()) throw std::runtime_error(loaded.status().message());
    return std::move(loaded).value();
  }();
  return tokenizer.get();
}

// Catch2 v2 has no SKIP: warn visibly and leave the test case.
#define DGPT_REQUIRE_SHARED_GPT2_OR_SKIP(tokenizer_var)                                          \
  const ::dgpt::BpeTokenizer* tokenizer_var = ::dgpt::testing::SharedGpt2Tokenizer();            \
  if (tokenizer_var == nullptr) {                                                                \
    WARN("skipped: ../shared not found (looked for " << ::dgpt::testing::SharedGpt2Dir()         \
                                                     << "/vocab.json); clone the shared "        \
                                                        "data next to the project to run this"); \
    return;                                                                                      \
  }

// A fresh, empty directory under DGPT_TEST_TMP, removed when the process exits. The name gets
// the process id because ctest may run several test cases of this binary at once.
inline std::string MakeTempDir(const std::string& name) {
  struct Cleanup {
    std::vector<std::filesystem::path> dirs;
    ~Cleanup() {
      std::error_code ignored;
      for (const auto& dir : dirs) std::filesystem::remove_all(dir, ignored);
    }
  };
  static Cleanup cleanup;
  const std::filesystem::path dir =
      std::filesystem::path(DGPT_TEST_TMP) / (name + "-" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  cleanup.dirs.push_back(dir);
  return dir.string();
}

inline void WriteFile(const std::string& path, const std::string& contents) {
  std::ofstream(path, std::ios::binary) << contents;
}

// Spells raw bytes the way vocab.json and merges.txt do ("Ġ" for a space, ...).
inline std::string Spell(const std::string& bytes) {
  std::string spelled;
  for (const unsigned char byte : bytes) spelled += ByteToUnicode(byte);
  return spelled;
}

// Writes vocab.json + merges.txt for a byte-level BPE: ids 0..255 are the single bytes, then
// one token per merge (given as raw bytes, in rank order), then "<|endoftext|>".
inline std::string WriteTinyBpe(const std::string& name,
                                const std::vector<std::pair<std::string, std::string>>& merges) {
  const std::string dir = MakeTempDir(name);
  nlohmann::json vocab = nlohmann::json::object();
  int next_id = 0;
  for (int byte = 0; byte < 256; ++byte) vocab[Spell(std::string(1, char(byte)))] = next_id++;
  std::string merges_text = "#version: 0.2\n";
  for (const auto& [left, right] : merges) {
    vocab[Spell(left + right)] = next_id++;
    merges_text += Spell(left) + " " + Spell(right) + "\n";
  }
  vocab["<|endoftext|>"] = next_id++;
  WriteFile(dir + "/vocab.json", vocab.dump());
  WriteFile(dir + "/merges.txt", merges_text);
  return dir;
}

inline std::unique_ptr<Tokenizer> LoadOrDie(const std::string& dir) {
  auto loaded = LoadTokenizer(dir);
  if (!loaded.ok()) throw std::runtime_error(loaded.status().message());
  return std::move(loaded).value();
}

inline std::string DecodeOrDie(const Tokenizer& tokenizer, const std::vector<TokenId>& ids) {
  auto text = tokenizer.Decode(ids);
  if (!text.ok()) throw std::runtime_error(text.status().message());
  return std::move(text).value();
}

}  // namespace dgpt::testing
