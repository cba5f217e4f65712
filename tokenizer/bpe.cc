#include "tokenizer/bpe.h"

#include <cassert>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <functional>
#include <nlohmann/json.hpp>
#include <queue>

#include "tokenizer/byte_unicode.h"

namespace dgpt {
namespace {

// Words longer than this are rare and cost more to cache than to encode again.
constexpr size_t kMaxCachedWordBytes = 256;
constexpr size_t kMaxCacheEntries = 1 << 16;

struct FileCloser {
  void operator()(FILE* file) const { std::fclose(file); }
};

Result<std::string> ReadFile(const std::string& path) {
  std::unique_ptr<FILE, FileCloser> file(std::fopen(path.c_str(), "rb"));
  if (!file) return Status::Error(path + ": cannot open: " + std::strerror(errno));
  std::string contents;
  char buffer[1 << 16];
  size_t count = 0;
  while ((count = std::fread(buffer, 1, sizeof(buffer), file.get())) > 0) {
    contents.append(buffer, count);
  }
  if (std::ferror(file.get())) {
    return Status::Error(path + ": cannot read: " + std::strerror(errno));
  }
  return contents;
}

// A token as a JSON string literal, so that messages stay on one line whatever it contains.
std::string Quote(std::string_view token) {
  return nlohmann::json(std::string(token))
      .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

std::string OneLine(std::string message) {
  for (char& c : message) {
    if (c == '\n' || c == '\r') c = ' ';
  }
  return message;
}

bool IsSpecialTokenSpelling(std::string_view token) {
  return token.size() >= 4 && token.starts_with("<|") && token.ends_with("|>");
}

}  // namespace

Result<std::unique_ptr<BpeTokenizer>> BpeTokenizer::Load(const std::string& vocab_path,
                                                         const std::string& merges_path) {
  std::unique_ptr<BpeTokenizer> tokenizer(new BpeTokenizer());
  DGPT_RETURN_IF_ERROR(tokenizer->LoadVocab(vocab_path));
  DGPT_RETURN_IF_ERROR(tokenizer->LoadMerges(merges_path));
  auto pre_tokenizer = Gpt2PreTokenizer::Create();
  if (!pre_tokenizer.ok()) return pre_tokenizer.status();
  tokenizer->pre_tokenizer_ = std::move(pre_tokenizer).value();
  return tokenizer;
}

Status BpeTokenizer::LoadVocab(const std::string& path) {
  auto contents = ReadFile(path);
  if (!contents.ok()) return contents.status();
  nlohmann::json vocab;
  try {
    vocab = nlohmann::json::parse(*contents);
  } catch (const nlohmann::json::exception& e) {
    return Status::Error(path + ": invalid JSON: " + OneLine(e.what()));
  }
  if (!vocab.is_object() || vocab.empty()) {
    return Status::Error(path + ": expected a non-empty JSON object mapping tokens to ids");
  }

  // Ids must be exactly 0..N-1 so that every id below vocab_size() names a token.
  const size_t size = vocab.size();
  token_bytes_.assign(size, std::string());
  std::vector<bool> seen(size, false);
  token_to_id_.reserve(size);
  std::vector<std::pair<std::string, TokenId>> special_tokens;
  for (auto it = vocab.begin(); it != vocab.end(); ++it) {
    const std::string& token = it.key();
    const nlohmann::json& value = it.value();
    if (!value.is_number_integer()) {
      return Status::Error(path + ": the id of token " + Quote(token) + " is not an integer");
    }
    const int64_t id = value.get<int64_t>();
    if (id < 0 || static_cast<uint64_t>(id) >= size) {
      return Status::Error(path + ": token " + Quote(token) + " has id " + std::to_string(id) +
                           ", outside 0.." + std::to_string(size - 1) +
                           " (ids must number the entries without gaps)");
    }
    if (seen[id]) {
      return Status::Error(path + ": id " + std::to_string(id) + " is used twice (again by " +
                           Quote(token) + ")");
    }
    seen[id] = true;
    token_to_id_.emplace(token, static_cast<TokenId>(id));
    token_bytes_[id] = UnicodeToBytes(token);
    if (IsSpecialTokenSpelling(token)) special_tokens.emplace_back(token, id);
    if (token == "<|endoftext|>") eos_id_ = static_cast<TokenId>(id);
  }
  special_tokens_ = SpecialTokenMatcher(std::move(special_tokens));

  // Byte-level BPE starts from single bytes, so every byte needs a token of its own.
  for (int byte = 0; byte < 256; ++byte) {
    const std::string_view spelling = ByteToUnicode(static_cast<unsigned char>(byte));
    const auto it = token_to_id_.find(spelling);
    if (it == token_to_id_.end()) {
      char hex[8];
      std::snprintf(hex, sizeof(hex), "0x%02X", byte);
      return Status::Error(path + ": no token for byte " + hex + " (" + Quote(spelling) +
                           "); byte-level BPE needs all 256");
    }
    byte_token_[byte] = it->second;
  }
  return Status::Ok();
}

Status BpeTokenizer::LoadMerges(const std::string& path) {
  auto contents = ReadFile(path);
  if (!contents.ok()) return contents.status();
  const std::string_view text = *contents;
  merges_.reserve(token_bytes_.size() * 2);

  int32_t rank = 0;
  size_t line_number = 0;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string_view::npos) end = text.size();
    std::string_view line = text.substr(pos, end - pos);
    pos = end + 1;
    ++line_number;
    if (line.ends_with('\r')) line.remove_suffix(1);
    if (line.empty()) continue;
    if (line_number == 1 && line.starts_with("#version")) continue;

    const std::string where = path + ":" + std::to_string(line_number) + ": ";
    const size_t space = line.find(' ');
    if (space == std::string_view::npos || space == 0 || space + 1 == line.size() ||
        line.find(' ', space + 1) != std::string_view::npos) {
      return Status::Error(where + "expected two tokens separated by one space, got " +
                           Quote(line));
    }
    const std::string_view left = line.substr(0, space);
    const std::string_view right = line.substr(space + 1);
    const std::string merged = std::string(left) + std::string(right);
    const std::string_view parts[3] = {left, right, merged};
    TokenId part_ids[3];
    for (int i = 0; i < 3; ++i) {
      const std::optional<TokenId> id = TokenToId(parts[i]);
      if (!id)
        return Status::Error(where + "token " + Quote(parts[i]) + " is not in the vocabulary");
      part_ids[i] = *id;
    }
    // A repeated pair keeps its last rank, as in the reference implementations.
    merges_[PairKey(part_ids[0], part_ids[1])] = Merge{rank++, part_ids[2]};
  }
  return Status::Ok();
}

std::optional<TokenId> BpeTokenizer::TokenToId(std::string_view token) const {
  const auto it = token_to_id_.find(token);
  if (it == token_to_id_.end()) return std::nullopt;
  return it->second;
}

std::string BpeTokenizer::TokenBytes(TokenId id) const {
  assert(id >= 0 && id < vocab_size());
  return token_bytes_[id];
}

const BpeTokenizer::Merge* BpeTokenizer::FindMerge(TokenId left, TokenId right) const {
  const auto it = merges_.find(PairKey(left, right));
  return it == merges_.end() ? nullptr : &it->second;
}

std::vector<TokenId> BpeTokenizer::Encode(std::string_view text, bool allow_special) const {
  std::vector<TokenId> ids;
  ids.reserve(text.size() / 3 + 1);
  const auto encode_text = [&](std::string_view segment) {
    pre_tokenizer_->Split(segment, [&](std::string_view word) { EncodeWord(word, &ids); });
  };
  if (allow_special && !special_tokens_.empty()) {
    special_tokens_.Split(text, encode_text, [&](TokenId id) { ids.push_back(id); });
  } else {
    encode_text(text);
  }
  return ids;
}

void BpeTokenizer::EncodeWord(std::string_view word, std::vector<TokenId>* ids) const {
  if (word.empty()) return;
  if (word.size() == 1) {
    ids->push_back(byte_token_[static_cast<unsigned char>(word[0])]);
    return;
  }
  const bool cacheable = word.size() <= kMaxCachedWordBytes;
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mutex_);
    const auto it = cache_.find(word);
    if (it != cache_.end()) {
      ids->insert(ids->end(), it->second.begin(), it->second.end());
      return;
    }
  }
  const size_t first = ids->size();
  MergeWord(word, ids);
  if (cacheable) {
    std::vector<TokenId> encoded(ids->begin() + first, ids->end());
    std::lock_guard<std::mutex> lock(cache_mutex_);
    if (cache_.size() >= kMaxCacheEntries) cache_.clear();
    cache_.emplace(std::string(word), std::move(encoded));
  }
}

// BPE over a doubly linked list of symbols, with candidate merges in a priority queue ordered by
// (rank, position): the lowest-ranked pair merges first, leftmost first among equals, as in the
// reference. Queue entries go stale when a neighbour merges; they are checked when popped.
void BpeTokenizer::MergeWord(std::string_view word, std::vector<TokenId>* ids) const {
  struct Symbol {
    TokenId id;
    int prev;  // -1: none
    int next;  // -1: none
    bool alive;
  };
  struct Candidate {
    int32_t rank;
    int pos;  // index of the left symbol
    TokenId result;
    bool operator>(const Candidate& other) const {
      return rank != other.rank ? rank > other.rank : pos > other.pos;
    }
  };

  const int size = static_cast<int>(word.size());
  std::vector<Symbol> symbols(size);
  for (int i = 0; i < size; ++i) {
    symbols[i] = Symbol{byte_token_[static_cast<unsigned char>(word[i])], i - 1,
                        i + 1 < size ? i + 1 : -1, true};
  }

  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> queue;
  const auto consider = [&](int left) {
    const int right = symbols[left].next;
    if (right < 0) return;
    if (const Merge* merge = FindMerge(symbols[left].id, symbols[right].id)) {
      queue.push(Candidate{merge->rank, left, merge->result});
    }
  };
  for (int i = 0; i + 1 < size; ++i) consider(i);

  while (!queue.empty()) {
    const Candidate top = queue.top();
    queue.pop();
    Symbol& left = symbols[top.pos];
    if (!left.alive || left.next < 0) continue;
    const Merge* merge = FindMerge(left.id, symbols[left.next].id);
    if (merge == nullptr || merge->rank != top.rank || merge->result != top.result) continue;

    Symbol& right = symbols[left.next];
    left.id = top.result;
    right.alive = false;
    left.next = right.next;
    if (left.next >= 0) symbols[left.next].prev = top.pos;
    if (left.prev >= 0) consider(left.prev);
    consider(top.pos);
  }

  for (int i = 0; i >= 0; i = symbols[i].next) ids->push_back(symbols[i].id);
}

}  // namespace dgpt
