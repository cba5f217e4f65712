#include "tokenizer/sentencepiece_tokenizer.h"

#include <sentencepiece_processor.h>

#include <cassert>
#include <cerrno>
#include <cstring>
#include <fstream>

namespace dgpt {
namespace {

constexpr std::string_view kSpaceMarker = "\xE2\x96\x81";  // "▁" U+2581

// The byte of a byte-fallback piece "<0xAB>", if `piece` is one.
std::optional<char> ParseBytePiece(std::string_view piece) {
  if (piece.size() != 6 || !piece.starts_with("<0x") || !piece.ends_with(">")) return std::nullopt;
  int value = 0;
  for (const char c : piece.substr(3, 2)) {
    int digit = 0;
    if (c >= '0' && c <= '9') {
      digit = c - '0';
    } else if (c >= 'A' && c <= 'F') {
      digit = c - 'A' + 10;
    } else if (c >= 'a' && c <= 'f') {
      digit = c - 'a' + 10;
    } else {
      return std::nullopt;
    }
    value = value * 16 + digit;
  }
  return static_cast<char>(value);
}

std::string ReplaceSpaceMarkers(std::string_view piece) {
  std::string bytes;
  bytes.reserve(piece.size());
  size_t pos = 0;
  while (pos < piece.size()) {
    if (piece.substr(pos).starts_with(kSpaceMarker)) {
      bytes.push_back(' ');
      pos += kSpaceMarker.size();
    } else {
      bytes.push_back(piece[pos++]);
    }
  }
  return bytes;
}

}  // namespace

SentencePieceTokenizer::SentencePieceTokenizer()
    : processor_(std::make_unique<sentencepiece::SentencePieceProcessor>()) {}

SentencePieceTokenizer::~SentencePieceTokenizer() = default;

Result<std::unique_ptr<SentencePieceTokenizer>> SentencePieceTokenizer::Load(
    const std::string& model_path) {
  // sentencepiece's own message for a missing file is vague; check first to say what is wrong.
  if (!std::ifstream(model_path, std::ios::binary)) {
    return Status::Error(model_path + ": cannot open: " + std::strerror(errno));
  }
  std::unique_ptr<SentencePieceTokenizer> tokenizer(new SentencePieceTokenizer());
  const sentencepiece::util::Status status = tokenizer->processor_->Load(model_path);
  if (!status.ok()) {
    std::string message = status.ToString();
    for (char& c : message) {
      if (c == '\n' || c == '\r') c = ' ';
    }
    return Status::Error(model_path + ": not a valid SentencePiece model: " + message);
  }

  const sentencepiece::SentencePieceProcessor& processor = *tokenizer->processor_;
  const int size = processor.GetPieceSize();
  tokenizer->token_bytes_.resize(size);
  std::vector<std::pair<std::string, TokenId>> control_tokens;
  for (int id = 0; id < size; ++id) {
    const std::string& piece = processor.IdToPiece(id);
    std::optional<char> byte;
    if (processor.IsByte(id)) byte = ParseBytePiece(piece);
    if (byte) {
      tokenizer->token_bytes_[id] = std::string(1, *byte);
    } else if (processor.IsControl(id) || processor.IsUnknown(id)) {
      tokenizer->token_bytes_[id] = piece;
      if (processor.IsControl(id)) control_tokens.emplace_back(piece, id);
    } else {
      tokenizer->token_bytes_[id] = ReplaceSpaceMarkers(piece);
    }
  }
  tokenizer->control_tokens_ = SpecialTokenMatcher(std::move(control_tokens));
  if (processor.eos_id() >= 0 && processor.eos_id() < size) tokenizer->eos_id_ = processor.eos_id();

  // The model proto (which says whether a dummy prefix is added) needs protobuf headers that
  // are not installed with the library; asking the model to encode one letter tells as well.
  std::vector<TokenId> probe;
  tokenizer->EncodeOrdinaryText("a", &probe);
  tokenizer->adds_dummy_prefix_ =
      !probe.empty() && tokenizer->token_bytes_[probe.front()].starts_with(' ');
  return tokenizer;
}

void SentencePieceTokenizer::EncodeOrdinaryText(std::string_view text,
                                                std::vector<TokenId>* ids) const {
  std::vector<int> pieces;
  // Encode only fails on an unloaded model, which Load rules out; the result is then empty.
  (void)processor_->Encode(text, &pieces);
  ids->insert(ids->end(), pieces.begin(), pieces.end());
}

std::vector<TokenId> SentencePieceTokenizer::Encode(std::string_view text,
                                                    bool allow_special) const {
  std::vector<TokenId> ids;
  if (allow_special && !control_tokens_.empty()) {
    control_tokens_.Split(
        text, [&](std::string_view segment) { EncodeOrdinaryText(segment, &ids); },
        [&](TokenId id) { ids.push_back(id); });
  } else {
    EncodeOrdinaryText(text, &ids);
  }
  return ids;
}

std::string SentencePieceTokenizer::TokenBytes(TokenId id) const {
  assert(id >= 0 && id < vocab_size());
  return token_bytes_[id];
}

Result<std::string> SentencePieceTokenizer::Decode(std::span<const TokenId> ids) const {
  auto text = Tokenizer::Decode(ids);
  if (!text.ok()) return text;
  if (adds_dummy_prefix_ && !ids.empty() && token_bytes_[ids.front()].starts_with(' ')) {
    text->erase(0, 1);
  }
  return text;
}

}  // namespace dgpt
