#include "tools/serve/openai_api.h"

#include <fmt/format.h>

#include <cmath>
#include <limits>
#include <random>

namespace dgpt::serve {
namespace {

using nlohmann::json;

enum class Dialect { kOpenAi, kSimple };

const char* TypeName(const json& value) {
  switch (value.type()) {
    case json::value_t::null:
      return "null";
    case json::value_t::boolean:
      return "a boolean";
    case json::value_t::string:
      return "a string";
    case json::value_t::array:
      return "an array";
    case json::value_t::object:
      return "an object";
    case json::value_t::number_float:
      return "a number";
    default:
      return "an integer";
  }
}

ApiError WrongType(const std::string& param, const char* expected, const json& value) {
  return InvalidRequest(fmt::format("{} must be {}, got {}", param, expected, TypeName(value)),
                        param);
}

// The field, or nullptr when absent or null (OpenAI treats null as "use the default").
const json* Field(const json& body, const char* name) {
  auto it = body.find(name);
  return it == body.end() || it->is_null() ? nullptr : &*it;
}

// An integer, also when written as 16.0.
std::optional<int64_t> AsInteger(const json& value) {
  if (value.is_number_unsigned()) {
    const uint64_t v = value.get<uint64_t>();
    if (v > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return std::nullopt;
    return static_cast<int64_t>(v);
  }
  if (value.is_number_integer()) return value.get<int64_t>();
  if (value.is_number_float()) {
    const double v = value.get<double>();
    if (std::isfinite(v) && v == std::floor(v) && std::fabs(v) < 9.0e15) {
      return static_cast<int64_t>(v);
    }
  }
  return std::nullopt;
}

// Reads an optional integer field into *out, checking [low, high].
std::optional<ApiError> ReadInteger(const json& body, const char* name, int64_t low, int64_t high,
                                    int64_t* out) {
  const json* field = Field(body, name);
  if (!field) return std::nullopt;
  const auto value = AsInteger(*field);
  if (!field->is_number() || !value) return WrongType(name, "an integer", *field);
  if (*value < low || *value > high) {
    return InvalidRequest(
        fmt::format("{} must be between {} and {}, got {}", name, low, high, *value), name);
  }
  *out = *value;
  return std::nullopt;
}

std::optional<ApiError> ReadNumber(const json& body, const char* name, float* out) {
  const json* field = Field(body, name);
  if (!field) return std::nullopt;
  if (!field->is_number()) return WrongType(name, "a number", *field);
  *out = field->get<float>();
  return std::nullopt;
}

std::optional<ApiError> ReadBool(const json& body, const char* name, bool* out) {
  const json* field = Field(body, name);
  if (!field) return std::nullopt;
  if (!field->is_boolean()) return WrongType(name, "a boolean", *field);
  *out = field->get<bool>();
  return std::nullopt;
}

// OpenAI accepts a string, a list of strings, a list of token ids or a list of such lists.
ApiResult<std::vector<Prompt>> ParsePrompts(const json& body) {
  const json* field = Field(body, "prompt");
  if (!field) return std::vector<Prompt>{Prompt{std::string(), {}}};  // <|endoftext|>
  auto token_ids = [](const json& list) -> std::optional<std::vector<TokenId>> {
    std::vector<TokenId> ids;
    for (const json& item : list) {
      const auto id = AsInteger(item);
      if (!item.is_number() || !id || *id < 0 || *id > std::numeric_limits<TokenId>::max()) {
        return std::nullopt;
      }
      ids.push_back(static_cast<TokenId>(*id));
    }
    return ids;
  };
  const char* expected = "a string, a list of strings, a list of token ids or a list of lists";
  if (field->is_string()) return std::vector<Prompt>{Prompt{field->get<std::string>(), {}}};
  if (!field->is_array()) return WrongType("prompt", expected, *field);
  if (field->empty()) return InvalidRequest("prompt must not be an empty list", "prompt");
  if (field->front().is_number()) {
    auto ids = token_ids(*field);
    if (!ids) return InvalidRequest("prompt: token ids must be integers >= 0", "prompt");
    return std::vector<Prompt>{Prompt{std::nullopt, std::move(*ids)}};
  }
  if (field->size() > static_cast<size_t>(kMaxPrompts)) {
    return InvalidRequest(
        fmt::format("at most {} prompts per request, got {}", kMaxPrompts, field->size()),
        "prompt");
  }
  std::vector<Prompt> prompts;
  for (const json& item : *field) {
    if (item.is_string()) {
      prompts.push_back(Prompt{item.get<std::string>(), {}});
    } else if (item.is_array()) {
      auto ids = token_ids(item);
      if (!ids) return InvalidRequest("prompt: token ids must be integers >= 0", "prompt");
      prompts.push_back(Prompt{std::nullopt, std::move(*ids)});
    } else {
      return WrongType("prompt", expected, *field);
    }
  }
  return prompts;
}

ApiResult<std::vector<std::string>> ParseStop(const json& body) {
  const json* field = Field(body, "stop");
  std::vector<std::string> stop;
  if (!field) return stop;
  if (field->is_string()) {
    stop.push_back(field->get<std::string>());
  } else if (field->is_array()) {
    if (field->size() > static_cast<size_t>(kMaxStopStrings)) {
      return InvalidRequest(
          fmt::format("at most {} stop strings, got {}", kMaxStopStrings, field->size()), "stop");
    }
    for (const json& item : *field) {
      if (!item.is_string()) return WrongType("stop", "a string or a list of strings", item);
      stop.push_back(item.get<std::string>());
    }
  } else {
    return WrongType("stop", "a string or a list of strings", *field);
  }
  std::erase(stop, std::string());  // an empty stop string would end every completion at once
  return stop;
}

// OpenAI parameters this server does not implement: accepted only with their neutral value.
std::optional<ApiError> RejectUnsupported(const json& body, int n) {
  auto unsupported = [](const char* param, const std::string& why) {
    return InvalidRequest(fmt::format("{} is not supported by this server: {}", param, why), param);
  };
  if (Field(body, "logprobs")) return unsupported("logprobs", "it must be null");
  if (const json* echo = Field(body, "echo")) {
    if (!echo->is_boolean()) return WrongType("echo", "a boolean", *echo);
    if (echo->get<bool>()) return unsupported("echo", "it must be false");
  }
  if (const json* best_of = Field(body, "best_of")) {
    const auto value = AsInteger(*best_of);
    if (!best_of->is_number() || !value) return WrongType("best_of", "an integer", *best_of);
    if (*value != 1 && *value != n) return unsupported("best_of", "it must be 1 (or equal n)");
  }
  for (const char* penalty : {"presence_penalty", "frequency_penalty"}) {
    if (const json* field = Field(body, penalty)) {
      if (!field->is_number()) return WrongType(penalty, "a number", *field);
      if (field->get<double>() != 0.0) {
        return unsupported(penalty, "it must be 0 (use repetition_penalty)");
      }
    }
  }
  if (const json* bias = Field(body, "logit_bias")) {
    if (!bias->is_object()) return WrongType("logit_bias", "an object", *bias);
    if (!bias->empty()) return unsupported("logit_bias", "it must be empty");
  }
  if (const json* suffix = Field(body, "suffix")) {
    if (!suffix->is_string()) return WrongType("suffix", "a string", *suffix);
    if (!suffix->get<std::string>().empty()) return unsupported("suffix", "it must be null");
  }
  return std::nullopt;
}

ApiResult<CompletionRequest> ParseRequest(std::string_view text, const ModelInfo& model,
                                          Dialect dialect) {
  const json body = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (body.is_discarded()) return InvalidRequest("the request body is not valid JSON");
  if (!body.is_object()) return InvalidRequest("the request body must be a JSON object");

  const json* model_field = Field(body, "model");
  if (!model_field && dialect == Dialect::kOpenAi) {
    return InvalidRequest("you must provide a model parameter", "model");
  }
  if (model_field) {
    if (!model_field->is_string()) return WrongType("model", "a string", *model_field);
    if (model_field->get<std::string>() != model.name) {
      ApiError error =
          InvalidRequest(fmt::format("the model '{}' does not exist; this server serves '{}'",
                                     model_field->get<std::string>(), model.name),
                         "model");
      error.http_status = 404;
      error.code = "model_not_found";
      return error;
    }
  }

  CompletionRequest request;
  if (dialect == Dialect::kOpenAi) {
    request.sampling.temperature = 1.0f;
    request.sampling.top_k = 0;
    request.sampling.top_p = 1.0f;
  } else {
    request.max_tokens = 64;  // SamplingOptions' defaults are dgpt generate's
  }

  auto prompts = ParsePrompts(body);
  if (!prompts.ok()) return prompts.error();
  request.prompts = std::move(prompts.value());
  if (dialect == Dialect::kSimple && request.prompts.size() != 1) {
    return InvalidRequest("/generate takes one prompt; use /v1/completions for several", "prompt");
  }

  int64_t max_tokens = request.max_tokens;
  if (auto e = ReadInteger(body, "max_tokens", 0, model.context_length, &max_tokens)) return *e;
  request.max_tokens = static_cast<int>(max_tokens);

  if (auto e = ReadNumber(body, "temperature", &request.sampling.temperature)) return *e;
  if (auto e = ReadNumber(body, "top_p", &request.sampling.top_p)) return *e;
  int64_t top_k = request.sampling.top_k;
  if (auto e = ReadInteger(body, "top_k", 0, std::numeric_limits<int>::max(), &top_k)) return *e;
  request.sampling.top_k = static_cast<int>(top_k);
  if (auto e = ReadNumber(body, "repetition_penalty", &request.sampling.repetition_penalty)) {
    return *e;
  }
  if (!(request.sampling.temperature >= 0.0f) || !std::isfinite(request.sampling.temperature)) {
    return InvalidRequest("temperature must be >= 0 (0 = greedy)", "temperature");
  }
  if (!(request.sampling.top_p > 0.0f && request.sampling.top_p <= 1.0f)) {
    return InvalidRequest("top_p must be in (0, 1]", "top_p");
  }
  if (!(request.sampling.repetition_penalty > 0.0f) ||
      !std::isfinite(request.sampling.repetition_penalty)) {
    return InvalidRequest("repetition_penalty must be > 0 (1 = off)", "repetition_penalty");
  }

  if (const json* seed = Field(body, "seed")) {
    if (seed->is_number_unsigned()) {
      request.seed = seed->get<uint64_t>();
    } else {
      const auto value = AsInteger(*seed);
      if (!seed->is_number() || !value) return WrongType("seed", "an integer", *seed);
      if (*value < 0) return InvalidRequest("seed must be >= 0", "seed");
      request.seed = static_cast<uint64_t>(*value);
    }
  }

  auto stop = ParseStop(body);
  if (!stop.ok()) return stop.error();
  request.stop = std::move(stop.value());
  if (auto e = ReadBool(body, "ignore_eos", &request.ignore_eos)) return *e;

  if (dialect == Dialect::kSimple) {
    if (auto e = ReadBool(body, "stream", &request.stream)) return *e;
    if (request.stream) return InvalidRequest("/generate does not stream; use /v1/completions");
    return request;
  }

  int64_t n = 1;
  if (auto e = ReadInteger(body, "n", 1, kMaxChoicesPerPrompt, &n)) return *e;
  request.n = static_cast<int>(n);
  if (auto e = ReadBool(body, "stream", &request.stream)) return *e;
  if (const json* options = Field(body, "stream_options")) {
    if (!options->is_object()) return WrongType("stream_options", "an object", *options);
    if (auto e = ReadBool(*options, "include_usage", &request.include_usage)) return *e;
  }
  if (auto e = RejectUnsupported(body, request.n)) return *e;
  return request;
}

}  // namespace

ApiError InvalidRequest(std::string message, std::string param) {
  ApiError error;
  error.message = std::move(message);
  error.param = std::move(param);
  return error;
}

nlohmann::json ErrorJson(const ApiError& error) {
  auto or_null = [](const std::string& s) { return s.empty() ? json(nullptr) : json(s); };
  return {{"error",
           {{"message", error.message},
            {"type", error.type},
            {"param", or_null(error.param)},
            {"code", or_null(error.code)}}}};
}

ApiResult<CompletionRequest> ParseCompletionRequest(std::string_view body, const ModelInfo& model) {
  return ParseRequest(body, model, Dialect::kOpenAi);
}

ApiResult<CompletionRequest> ParseGenerateRequest(std::string_view body, const ModelInfo& model) {
  return ParseRequest(body, model, Dialect::kSimple);
}

std::optional<ApiError> CheckPromptFits(size_t prompt_tokens, int max_tokens, int context_length) {
  const int64_t needed = static_cast<int64_t>(prompt_tokens) + std::max(max_tokens, 1) - 1;
  if (needed <= context_length) return std::nullopt;
  ApiError error = InvalidRequest(
      fmt::format("this model's maximum context length is {} tokens, but the prompt has {} "
                  "tokens and max_tokens is {}; shorten the prompt or lower max_tokens",
                  context_length, prompt_tokens, max_tokens),
      "prompt");
  error.code = "context_length_exceeded";
  return error;
}

std::optional<ApiError> CheckTokenIds(const std::vector<TokenId>& ids, int vocab_size) {
  for (TokenId id : ids) {
    if (id < 0 || id >= vocab_size) {
      return InvalidRequest(
          fmt::format("prompt token id {} is outside the vocabulary (0..{})", id, vocab_size - 1),
          "prompt");
    }
  }
  return std::nullopt;
}

std::string NewCompletionId() {
  static constexpr std::string_view kAlphabet =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
  thread_local std::mt19937_64 rng{std::random_device{}()};
  std::uniform_int_distribution<size_t> pick(0, kAlphabet.size() - 1);
  std::string id = "cmpl-";
  for (int i = 0; i < 24; ++i) id += kAlphabet[pick(rng)];
  return id;
}

nlohmann::json CompletionResponse(const ResponseHeader& header, const std::vector<Choice>& choices,
                                  const Usage& usage) {
  json list = json::array();
  for (const Choice& choice : choices) {
    list.push_back({{"text", choice.text},
                    {"index", choice.index},
                    {"logprobs", nullptr},
                    {"finish_reason", choice.finish_reason}});
  }
  return {{"id", header.id},
          {"object", "text_completion"},
          {"created", header.created},
          {"model", header.model},
          {"choices", std::move(list)},
          {"usage",
           {{"prompt_tokens", usage.prompt_tokens},
            {"completion_tokens", usage.completion_tokens},
            {"total_tokens", usage.prompt_tokens + usage.completion_tokens}}}};
}

nlohmann::json CompletionChunk(const ResponseHeader& header, int index, std::string_view text,
                               std::string_view finish_reason) {
  return {{"id", header.id},
          {"object", "text_completion"},
          {"created", header.created},
          {"model", header.model},
          {"choices",
           json::array({json{
               {"text", text},
               {"index", index},
               {"logprobs", nullptr},
               {"finish_reason", finish_reason.empty() ? json(nullptr) : json(finish_reason)}}})}};
}

nlohmann::json UsageChunk(const ResponseHeader& header, const Usage& usage) {
  return {{"id", header.id},
          {"object", "text_completion"},
          {"created", header.created},
          {"model", header.model},
          {"choices", json::array()},
          {"usage",
           {{"prompt_tokens", usage.prompt_tokens},
            {"completion_tokens", usage.completion_tokens},
            {"total_tokens", usage.prompt_tokens + usage.completion_tokens}}}};
}

nlohmann::json ModelObject(const std::string& name, int64_t created) {
  return {{"id", name}, {"object", "model"}, {"created", created}, {"owned_by", "dgpt"}};
}

nlohmann::json ModelList(const std::string& name, int64_t created) {
  return {{"object", "list"}, {"data", json::array({ModelObject(name, created)})}};
}

std::string DumpJson(const nlohmann::json& value) {
  return value.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::string SseEvent(const nlohmann::json& value) {
  return "data: " + DumpJson(value) + "\n\n";
}

}  // namespace dgpt::serve
