#include "engine/generator.h"

#include <fmt/format.h>

#include <chrono>

namespace dgpt {

LocalBlockRunner::LocalBlockRunner(const Checkpoint& model, ThreadPool& pool, int chunk_tokens,
                                   std::optional<LayerRange> layers)
    : model_(model),
      pool_(pool),
      layers_(layers.value_or(model.layers())),
      workspace_(model.config(), chunk_tokens) {}

Status LocalBlockRunner::Begin(int capacity) {
  cache_ = std::make_unique<KvCache>(layers_, capacity, model_.config().n_embd);
  return Status::Ok();
}

Status LocalBlockRunner::Forward(float* x, int T, bool /*all_rows*/) {
  if (!cache_) return Status::Error("internal: Forward before Begin");
  if (cache_->length() + T > cache_->capacity()) {
    return Status::Error(fmt::format("sequence is full ({} positions)", cache_->capacity()));
  }
  const int C = model_.config().n_embd;
  for (int done = 0; done < T;) {
    const int chunk = std::min(T - done, workspace_.max_tokens());
    ForwardBlocks(x + static_cast<int64_t>(done) * C, chunk, *cache_, model_, workspace_, pool_);
    done += chunk;
  }
  return Status::Ok();
}

const char* StopReasonName(StopReason reason) {
  switch (reason) {
    case StopReason::kEndOfText:
      return "end_of_text";
    case StopReason::kMaxTokens:
      return "max_tokens";
    case StopReason::kCaller:
      return "stop";
  }
  return "unknown";
}

namespace {

using Clock = std::chrono::steady_clock;
double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

}  // namespace

Result<GenerationResult> Generate(const Checkpoint& model, BlockRunner& blocks,
                                  std::vector<TokenId> prompt, const GenerationOptions& options,
                                  ThreadPool& pool, const TokenCallback& on_token) {
  const ModelConfig& cfg = model.config();
  const int context = cfg.n_positions;
  DGPT_RETURN_IF_ERROR(options.sampling.Validate());
  if (options.max_tokens < 0) return Status::Error("max-tokens must be >= 0");
  if (prompt.empty()) {
    // GPT-2 samples unconditionally from <|endoftext|>, as it was trained.
    if (!options.end_of_text) return Status::Error("the prompt is empty");
    prompt.push_back(*options.end_of_text);
  }
  for (TokenId id : prompt) {
    if (id < 0 || id >= cfg.vocab_size) {
      return Status::Error(fmt::format("prompt token id {} is outside the vocabulary (0..{})", id,
                                       cfg.vocab_size - 1));
    }
  }
  // The last generated token is never fed back, so prompt + max_tokens - 1 positions are used.
  const int64_t needed = static_cast<int64_t>(prompt.size()) + std::max(options.max_tokens, 1) - 1;
  if (needed > context) {
    const int64_t room_for_prompt = context - std::max(options.max_tokens, 1) + 1;
    if (!options.truncate_prompt || room_for_prompt < 1) {
      return Status::Error(fmt::format(
          "prompt ({} tokens) + max-tokens ({}) exceeds the model's context of {} tokens; "
          "shorten the prompt, lower --max-tokens{}",
          prompt.size(), options.max_tokens, context,
          room_for_prompt >= 1 ? ", or pass --truncate to drop the oldest prompt tokens" : ""));
    }
    prompt.erase(prompt.begin(), prompt.end() - room_for_prompt);
  }

  GenerationResult result;
  result.prompt_ids = prompt;
  std::vector<TokenId> context_ids = prompt;
  const int C = cfg.n_embd;
  std::vector<float> x(static_cast<size_t>(prompt.size()) * C);
  std::vector<float> logits(cfg.vocab_size), normed(C);
  Sampler sampler(options.sampling);

  const auto start = Clock::now();
  DGPT_RETURN_IF_ERROR(blocks.Begin(static_cast<int>(needed)));
  struct EndOnExit {
    BlockRunner& blocks;
    ~EndOnExit() { blocks.End(); }
  } end_on_exit{blocks};

  EmbedTokens(x.data(), model, prompt, 0);
  DGPT_RETURN_IF_ERROR(blocks.Forward(x.data(), static_cast<int>(prompt.size()), false));
  result.prefill_seconds = SecondsSince(start);
  const float* last = x.data() + (prompt.size() - 1) * C;
  int position = static_cast<int>(prompt.size());
  Clock::time_point first_token_time;
  while (static_cast<int>(result.generated_ids.size()) < options.max_tokens) {
    if (options.logits_batcher) {
      options.logits_batcher->Compute(logits.data(), last);
    } else {
      ComputeLogits(logits.data(), last, model, normed.data(), pool);
    }
    if (options.observe_logits) options.observe_logits(logits);
    const TokenId next = sampler.Sample(logits, context_ids);
    result.generated_ids.push_back(next);
    context_ids.push_back(next);
    if (result.generated_ids.size() == 1) {
      first_token_time = Clock::now();
      result.first_token_seconds = SecondsSince(start);
    }
    if (on_token && !on_token(next)) {
      result.stop_reason = StopReason::kCaller;
      break;
    }
    if (options.end_of_text && next == *options.end_of_text && !options.ignore_end_of_text) {
      result.stop_reason = StopReason::kEndOfText;
      break;
    }
    if (static_cast<int>(result.generated_ids.size()) == options.max_tokens) break;
    x.resize(C);
    EmbedTokens(x.data(), model, std::span(&next, 1), position++);
    DGPT_RETURN_IF_ERROR(blocks.Forward(x.data(), 1, false));
    last = x.data();
  }
  if (!result.generated_ids.empty()) {
    result.decode_seconds = std::chrono::duration<double>(Clock::now() - first_token_time).count();
  }
  return result;
}

}  // namespace dgpt
