#include "tokenizer/gpt2_pretokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <cstdint>
#include <string>

namespace dgpt {

void Gpt2PreTokenizer::CodeDeleter::operator()(pcre2_code* code) const {
  pcre2_code_free(code);
}

namespace {

constexpr std::string_view kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

std::string Pcre2ErrorMessage(int error_code) {
  PCRE2_UCHAR buffer[256];
  if (pcre2_get_error_message(error_code, buffer, sizeof(buffer)) < 0) {
    return "PCRE2 error " + std::to_string(error_code);
  }
  return reinterpret_cast<const char*>(buffer);
}

struct MatchDataDeleter {
  void operator()(pcre2_match_data* data) const { pcre2_match_data_free(data); }
};

}  // namespace

Result<std::unique_ptr<Gpt2PreTokenizer>> Gpt2PreTokenizer::Create() {
  int error_code = 0;
  PCRE2_SIZE error_offset = 0;
  // UCP makes \s and the classes Unicode-aware; MATCH_INVALID_UTF lets matching skip over
  // invalid UTF-8 instead of rejecting the whole subject.
  CodePtr code(pcre2_compile(reinterpret_cast<PCRE2_SPTR>(kGpt2Pattern.data()), kGpt2Pattern.size(),
                             PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &error_code,
                             &error_offset, nullptr));
  if (code == nullptr) {
    return Status::Error("cannot compile the GPT-2 pre-tokenizer pattern: " +
                         Pcre2ErrorMessage(error_code));
  }
  // JIT is several times faster; without it (unsupported CPU, or PCRE2 built without JIT)
  // pcre2_match falls back to the interpreter by itself.
  const bool uses_jit = pcre2_jit_compile(code.get(), PCRE2_JIT_COMPLETE) == 0;
  return std::unique_ptr<Gpt2PreTokenizer>(new Gpt2PreTokenizer(std::move(code), uses_jit));
}

void Gpt2PreTokenizer::Split(std::string_view text,
                             const std::function<void(std::string_view)>& on_piece) const {
  // Match data is per call: it is scratch space and must not be shared between threads.
  std::unique_ptr<pcre2_match_data, MatchDataDeleter> match_data(
      pcre2_match_data_create_from_pattern(code_.get(), nullptr));
  if (match_data == nullptr) {  // out of memory: one piece is still a correct (if slow) split
    if (!text.empty()) on_piece(text);
    return;
  }
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t pos = 0;
  while (pos < text.size()) {
    int rc = pcre2_match(code_.get(), subject, text.size(), pos, 0, match_data.get(), nullptr);
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT) {
      // The interpreter keeps its backtracking state on the heap, so it has room to spare.
      rc = pcre2_match(code_.get(), subject, text.size(), pos, PCRE2_NO_JIT, match_data.get(),
                       nullptr);
    }
    if (rc < 0) {
      // No match: only invalid UTF-8 is left. Any other error (resource limits) can't happen
      // with this pattern in practice; emitting the rest as one piece still round-trips.
      on_piece(text.substr(pos));
      return;
    }
    const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(match_data.get());
    const size_t match_start = ovector[0];
    const size_t match_end = ovector[1];
    // Every valid character matches one of the alternatives, so the bytes skipped before a
    // match are exactly a run of invalid UTF-8.
    if (match_start > pos) on_piece(text.substr(pos, match_start - pos));
    if (match_end <= match_start) {  // can't happen: every alternative consumes a character
      on_piece(text.substr(match_start));
      return;
    }
    on_piece(text.substr(match_start, match_end - match_start));
    pos = match_end;
  }
}

}  // namespace dgpt
