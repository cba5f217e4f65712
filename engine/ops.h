// The GPT-2 building blocks as free functions: output first, then inputs, then sizes.
// Shape letters: T = tokens in this step, C = channels, NH = heads, HD = C / NH,
// V = vocabulary, S = positions held in the KV cache. All matrices are row-major.
#pragma once

#include <cstdint>

#include "engine/config.h"
#include "engine/thread_pool.h"

namespace dgpt {

// out[T, C] = (in - mean) / sqrt(var + eps) * weight + bias, row by row.
void layernorm_forward(float* out, const float* in, const float* weight, const float* bias, int T,
                       int C, float eps);

// out[T, OUT] = in[T, IN] @ weight[IN, OUT] + bias[OUT] (Conv1D layout). T > 1 goes to BLAS
// sgemm; T == 1 is a matrix-vector product split over the pool by output column.
void matmul_forward(float* out, const float* in, const float* weight, const float* bias, int T,
                    int IN, int OUT, ThreadPool& pool);

// out[B, OUT] = in[B, IN] @ weight[IN, OUT] + bias for B independent rows (batched decode): the
// weights are read once for all rows, and each row's arithmetic is exactly that of
// matmul_forward with T == 1, so batching never changes a result.
void matmul_rows_forward(float* out, const float* in, const float* weight, const float* bias, int B,
                         int IN, int OUT, ThreadPool& pool);

// In place over N values; GPT-2 uses the tanh approximation ("gelu_new").
void gelu_forward(float* x, int64_t N, Activation activation);

// x[N] += y[N]
void residual_forward(float* x, const float* y, int64_t N);

// In place: x[N] = exp(x - max) / sum.
void softmax_forward(float* x, int N);

// Causal multi-head attention for T new tokens at positions pos0 .. pos0+T-1.
// qkv[T, 3C] holds q | k | v per token; the new k and v rows are first appended to
// k_cache[S, C] / v_cache[S, C] at row pos0, then each query attends to rows 0 .. its position.
void attention_forward(float* out, const float* qkv, float* k_cache, float* v_cache, int pos0,
                       int T, int C, int NH, ThreadPool& pool);

// logits[V] = x[C] @ head[V, C]^T (the tied LM head), split over the pool by vocabulary row.
void logits_forward(float* logits, const float* x, const float* head, int V, int C,
                    ThreadPool& pool);

// logits[B, V] for B rows x[B, C]: the head is read once for all rows, and each row's result is
// bit-identical to logits_forward on that row alone.
void logits_rows_forward(float* logits, const float* x, const float* head, int B, int V, int C,
                         ThreadPool& pool);

// Sets BLAS's own thread count (prefill sgemm); called once per process.
void SetBlasThreads(int num_threads);

}  // namespace dgpt
