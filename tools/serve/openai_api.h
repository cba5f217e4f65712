// The wire format of `dgpt serve`: OpenAI-compatible completion requests and responses, the
// simple /generate request, server-sent-event chunks and OpenAI's error shape. Pure functions of
// their inputs (no model, no sockets), so every case is unit-tested.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "engine/sampler.h"

namespace dgpt::serve {

// An answer that is not a success: the HTTP status and OpenAI's
// {"error": {"message", "type", "param", "code"}}; empty param/code are null.
struct ApiError {
  int http_status = 400;
  std::string message;
  std::string type = "invalid_request_error";
  std::string param;
  std::string code;
};

ApiError InvalidRequest(std::string message, std::string param = "");
nlohmann::json ErrorJson(const ApiError& error);

// A value or an ApiError (Result<T> for errors that carry an HTTP status).
template <typename T>
class ApiResult {
 public:
  ApiResult(T value) : value_(std::move(value)) {}         // NOLINT: implicit on purpose
  ApiResult(ApiError error) : value_(std::move(error)) {}  // NOLINT
  bool ok() const { return std::holds_alternative<T>(value_); }
  const ApiError& error() const { return std::get<ApiError>(value_); }
  T& value() { return std::get<T>(value_); }
  const T& value() const { return std::get<T>(value_); }
  T* operator->() { return &value(); }

 private:
  std::variant<T, ApiError> value_;
};

// What the server serves, for validating requests.
struct ModelInfo {
  std::string name;        // the model folder's basename; requests must name it
  int context_length = 0;  // n_positions
  int vocab_size = 0;      // the model's
};

// One prompt: text to tokenize, or token ids as given.
struct Prompt {
  std::optional<std::string> text;
  std::vector<TokenId> ids;
};

inline constexpr int kMaxChoicesPerPrompt = 8;  // n
inline constexpr int kMaxPrompts = 32;
inline constexpr int kMaxStopStrings = 4;

// A validated request for one or more completions. Choice j of prompt i has index i * n + j and
// seed + j, so a request with n = 1 and seed S reproduces `dgpt generate --seed S`.
struct CompletionRequest {
  std::vector<Prompt> prompts;  // at least one
  int max_tokens = 16;
  SamplingOptions sampling;
  std::optional<uint64_t> seed;  // none: the server picks one
  std::vector<std::string> stop;
  int n = 1;
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage: one last chunk with usage
  bool ignore_eos = false;     // extension: keep going past <|endoftext|>
};

// POST /v1/completions. OpenAI's defaults: max_tokens 16, temperature 1, top_p 1; extensions
// top_k (0 = off), repetition_penalty (1 = off) and ignore_eos. Fields this server cannot honour
// (logprobs, echo, best_of > n, penalties, logit_bias, suffix) are a 400 unless they hold their
// neutral value; other unknown fields are ignored. Prompt lengths are checked later
// (CheckPromptFits), once tokenized.
ApiResult<CompletionRequest> ParseCompletionRequest(std::string_view body, const ModelInfo& model);

// POST /generate {"prompt": "...", "max_tokens": N, ...}: one prompt, no streaming, and the
// defaults of `dgpt generate` (max_tokens 64, temperature 0.8, top_k 40, top_p 0.95). "model"
// is optional but must match when given.
ApiResult<CompletionRequest> ParseGenerateRequest(std::string_view body, const ModelInfo& model);

// 400 context_length_exceeded when a prompt of `prompt_tokens` (never 0: an empty prompt is
// <|endoftext|>) plus `max_tokens` does not fit the context, by the rule Generate() applies (the
// last token is never fed back).
std::optional<ApiError> CheckPromptFits(size_t prompt_tokens, int max_tokens, int context_length);

// 400 when a token-id prompt holds an id outside the model's vocabulary.
std::optional<ApiError> CheckTokenIds(const std::vector<TokenId>& ids, int vocab_size);

// Response pieces.
struct ResponseHeader {
  std::string id;  // "cmpl-..."
  int64_t created = 0;
  std::string model;
};

struct Choice {
  int index = 0;
  std::string text;
  std::string finish_reason;  // "stop" or "length"
};

struct Usage {
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
};

// "cmpl-" and 24 random letters and digits.
std::string NewCompletionId();

nlohmann::json CompletionResponse(const ResponseHeader& header, const std::vector<Choice>& choices,
                                  const Usage& usage);
// One streamed piece of choice `index`; finish_reason empty -> null (not the last piece).
nlohmann::json CompletionChunk(const ResponseHeader& header, int index, std::string_view text,
                               std::string_view finish_reason);
// The last chunk when stream_options.include_usage: no choices, the usage.
nlohmann::json UsageChunk(const ResponseHeader& header, const Usage& usage);

nlohmann::json ModelObject(const std::string& name, int64_t created);
nlohmann::json ModelList(const std::string& name, int64_t created);

// JSON text; invalid UTF-8 (a token that ends mid-character at the end of a completion) becomes
// U+FFFD instead of throwing.
std::string DumpJson(const nlohmann::json& value);
// One server-sent event: "data: {json}\n\n".
std::string SseEvent(const nlohmann::json& value);
inline constexpr std::string_view kSseDone = "data: [DONE]\n\n";

}  // namespace dgpt::serve
