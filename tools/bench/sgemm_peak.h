// The ceiling of a compute-bound prefill: how fast this machine's BLAS multiplies float matrices
// (cblas_sgemm through OpenBLAS, as prefill does), in GFLOP/s.
#pragma once

namespace dgpt::bench {

// Best GFLOP/s (2*M*N*K per call / seconds) of C[M, N] = A[M, K] @ B[K, N]^T over repeated
// calls for at least `min_seconds`, with BLAS running `threads` threads (left set afterwards).
double MeasureSgemmGflops(int M, int N, int K, int threads, double min_seconds = 0.5);

}  // namespace dgpt::bench
