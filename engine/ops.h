// The GPT-2 building blocks as free functions: output first, then inputs, then sizes.
// Shape letters: T = tokens in this step, C = channels, NH = heads, HD = C / NH,
// V = vocabulary, S = positions held in the KV cache. All matrices are row-major.
#pragma once

#include <cstdint>

#include "engine/config.h"
#include "engine/thread_pool.h"
#include "engine/weights.h"

namespace dgpt {

// out[T, C] = (in - mean) / sqrt(var + eps) * weight + bias, row by row.
void layernorm_forward(float* out, const float* in, const float* weight, const float* bias, int T,
                       int C, float eps);

// out[T, OUT] = in[T, IN] @ W^T + bias[OUT], for W = w [OUT rows, IN cols] in any weight format
// (bias may be null). T == 1 is the decode GEMV: rows split over the pool, each output computed
// by the active SIMD kernel whatever the split. Small T takes the batched path below; larger T
// (prefill) goes to BLAS sgemm, widening f16 / q8_0 weights a tile of rows at a time. With
// q8_0 weights every path first rounds the input through q8_0 (as the integer dot products do),
// so prefill and decode compute the same function.
void matmul_forward(float* out, const float* in, const WeightMatrix& w, const float* bias, int T,
                    ThreadPool& pool);

// out[B, OUT] for B independent rows (batched decode): each weight row is read from memory once
// for all B inputs, and each row's result is bit-identical to matmul_forward with T == 1.
void matmul_rows_forward(float* out, const float* in, const WeightMatrix& w, const float* bias,
                         int B, ThreadPool& pool);

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

// Sets BLAS's own thread count (prefill sgemm); called once per process.
void SetBlasThreads(int num_threads);

}  // namespace dgpt
