#include "engine/transformer.h"

#include <algorithm>
#include <cassert>

#include "engine/ops.h"

namespace dgpt {

Workspace::Workspace(const ModelConfig& config, int max_tokens)
    : normed(static_cast<size_t>(max_tokens) * config.n_embd),
      qkv(static_cast<size_t>(max_tokens) * 3 * config.n_embd),
      attention(static_cast<size_t>(max_tokens) * config.n_embd),
      projected(static_cast<size_t>(max_tokens) * config.n_embd),
      hidden(static_cast<size_t>(max_tokens) * 4 * config.n_embd),
      max_tokens_(max_tokens) {}

void EmbedTokens(float* x, const Checkpoint& model, std::span<const TokenId> ids, int pos0) {
  const int C = model.config().n_embd;
  for (size_t t = 0; t < ids.size(); ++t) {
    const float* position_row = model.position_embedding() + static_cast<int64_t>(pos0 + t) * C;
    float* out = x + t * C;
    WeightRowToFloat(out, model.token_embedding(), ids[t]);
    for (int c = 0; c < C; ++c) out[c] += position_row[c];
  }
}

void ForwardBlocks(float* x, int T, KvCache& cache, const Checkpoint& model, Workspace& ws,
                   ThreadPool& pool) {
  const ModelConfig& cfg = model.config();
  const int C = cfg.n_embd, NH = cfg.n_head;
  const int pos0 = cache.length();
  assert(pos0 + T <= cache.capacity() && T <= ws.max_tokens());
  for (int layer = cache.layers().begin; layer < cache.layers().end; ++layer) {
    const BlockWeights& w = model.block(layer);
    // x = x + attn(ln_1(x))
    layernorm_forward(ws.normed.data(), x, w.ln1_weight, w.ln1_bias, T, C, cfg.layer_norm_epsilon);
    matmul_forward(ws.qkv.data(), ws.normed.data(), w.qkv_weight, w.qkv_bias, T, pool);
    attention_forward(ws.attention.data(), ws.qkv.data(), cache.keys(layer), cache.values(layer),
                      pos0, T, C, NH, pool);
    matmul_forward(ws.projected.data(), ws.attention.data(), w.attn_proj_weight, w.attn_proj_bias,
                   T, pool);
    residual_forward(x, ws.projected.data(), static_cast<int64_t>(T) * C);
    // x = x + mlp(ln_2(x))
    layernorm_forward(ws.normed.data(), x, w.ln2_weight, w.ln2_bias, T, C, cfg.layer_norm_epsilon);
    matmul_forward(ws.hidden.data(), ws.normed.data(), w.fc_weight, w.fc_bias, T, pool);
    gelu_forward(ws.hidden.data(), static_cast<int64_t>(T) * 4 * C, cfg.activation);
    matmul_forward(ws.projected.data(), ws.hidden.data(), w.mlp_proj_weight, w.mlp_proj_bias, T,
                   pool);
    residual_forward(x, ws.projected.data(), static_cast<int64_t>(T) * C);
  }
  cache.set_length(pos0 + T);
}

void ForwardBlocksBatch(float* x, std::span<KvCache* const> caches, const Checkpoint& model,
                        Workspace& ws, ThreadPool& pool) {
  const ModelConfig& cfg = model.config();
  const int C = cfg.n_embd, NH = cfg.n_head;
  const int B = static_cast<int>(caches.size());
  assert(B >= 1 && B <= ws.max_tokens());
  const LayerRange layers = caches[0]->layers();
  for (int layer = layers.begin; layer < layers.end; ++layer) {
    const BlockWeights& w = model.block(layer);
    layernorm_forward(ws.normed.data(), x, w.ln1_weight, w.ln1_bias, B, C, cfg.layer_norm_epsilon);
    matmul_rows_forward(ws.qkv.data(), ws.normed.data(), w.qkv_weight, w.qkv_bias, B, pool);
    for (int b = 0; b < B; ++b) {  // each row attends over its own sequence's cache
      KvCache& cache = *caches[b];
      attention_forward(ws.attention.data() + static_cast<int64_t>(b) * C,
                        ws.qkv.data() + static_cast<int64_t>(b) * 3 * C, cache.keys(layer),
                        cache.values(layer), cache.length(), 1, C, NH, pool);
    }
    matmul_rows_forward(ws.projected.data(), ws.attention.data(), w.attn_proj_weight,
                        w.attn_proj_bias, B, pool);
    residual_forward(x, ws.projected.data(), static_cast<int64_t>(B) * C);
    layernorm_forward(ws.normed.data(), x, w.ln2_weight, w.ln2_bias, B, C, cfg.layer_norm_epsilon);
    matmul_rows_forward(ws.hidden.data(), ws.normed.data(), w.fc_weight, w.fc_bias, B, pool);
    gelu_forward(ws.hidden.data(), static_cast<int64_t>(B) * 4 * C, cfg.activation);
    matmul_rows_forward(ws.projected.data(), ws.hidden.data(), w.mlp_proj_weight, w.mlp_proj_bias,
                        B, pool);
    residual_forward(x, ws.projected.data(), static_cast<int64_t>(B) * C);
  }
  for (KvCache* cache : caches) cache->set_length(cache->length() + 1);
}

void ComputeLogits(float* logits, const float* x, const Checkpoint& model, float* normed,
                   ThreadPool& pool) {
  const ModelConfig& cfg = model.config();
  layernorm_forward(normed, x, model.final_norm_weight(), model.final_norm_bias(), 1, cfg.n_embd,
                    cfg.layer_norm_epsilon);
  matmul_forward(logits, normed, model.lm_head(), nullptr, 1, pool);
}

LogitsBatcher::LogitsBatcher(const Checkpoint& model, ThreadPool& pool, int max_batch)
    : model_(model),
      pool_(pool),
      max_batch_(max_batch),
      normed_(static_cast<size_t>(max_batch) * model.config().n_embd),
      logits_(static_cast<size_t>(max_batch) * model.config().vocab_size) {}

void LogitsBatcher::Compute(float* logits, const float* x) {
  Request request{logits, x};
  std::unique_lock lock(mutex_);
  pending_.push_back(&request);
  // The first caller to find no batch running leads: it computes batches until none are
  // pending. Everyone else waits for its own result.
  while (!request.done) {
    if (leader_active_) {
      done_.wait(lock);
      continue;
    }
    leader_active_ = true;
    while (!pending_.empty()) {
      const size_t take = std::min<size_t>(pending_.size(), max_batch_);
      std::vector<Request*> batch(pending_.begin(), pending_.begin() + take);
      pending_.erase(pending_.begin(), pending_.begin() + take);
      lock.unlock();
      RunBatch(batch);
      lock.lock();
      for (Request* done : batch) done->done = true;
      done_.notify_all();
    }
    leader_active_ = false;
    done_.notify_all();  // a waiter that queued during the last batch may lead next
  }
}

void LogitsBatcher::RunBatch(std::vector<Request*>& batch) {
  const ModelConfig& cfg = model_.config();
  const int B = static_cast<int>(batch.size()), C = cfg.n_embd, V = cfg.vocab_size;
  for (int b = 0; b < B; ++b) {
    layernorm_forward(normed_.data() + static_cast<size_t>(b) * C, batch[b]->x,
                      model_.final_norm_weight(), model_.final_norm_bias(), 1, C,
                      cfg.layer_norm_epsilon);
  }
  matmul_rows_forward(logits_.data(), normed_.data(), model_.lm_head(), nullptr, B, pool_);
  for (int b = 0; b < B; ++b) {
    std::copy(logits_.begin() + static_cast<size_t>(b) * V,
              logits_.begin() + static_cast<size_t>(b + 1) * V, batch[b]->logits);
  }
}

}  // namespace dgpt
