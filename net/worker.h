// A pipeline stage: holds a contiguous range of transformer blocks (assigned by the
// coordinator), a KV cache per sequence, and passes activations on to the next hop.
//
// Threads: one accepts connections; one per connection reads frames (control connections are
// answered on that thread); one computes FORWARD frames in arrival order and writes to the next
// hop. So a stage reads chunk k+1 while it computes chunk k, and prefill flows as a pipeline.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>

#include "base/status.h"
#include "engine/kernels/kernels.h"
#include "net/auth.h"
#include "net/connection.h"

namespace dgpt::net {

struct WorkerOptions {
  std::string listen = "127.0.0.1:7070";  // HOST:PORT; port 0 picks a free one
  std::string model_dir;                  // a full checkpoint or a shard from `dgpt split`
  std::string name;                       // for logs and HELLO; default: the listen address
  int threads = 0;                        // 0 = all cores
  int max_sequences = 16;                 // KV caches held at once
  std::optional<WeightFormat> weight_format = std::nullopt;  // compute format; unset = as stored
  std::optional<AuthKey> auth_key;
  Duration idle_timeout = std::chrono::seconds(300);  // frees sequences nobody touched
  Duration io_timeout = std::chrono::seconds(30);     // for writes to the next hop
  uint32_t max_frame_bytes = kDefaultMaxFrameBytes;
};

class Worker {
 public:
  // Checks the model folder, binds the listener and starts serving.
  static Result<std::unique_ptr<Worker>> Start(const WorkerOptions& options);
  ~Worker();

  uint16_t port() const;
  // Stops accepting, fails queued FORWARDs with ERROR shutting_down, closes every connection.
  // Thread-safe; safe to call from a signal-handling thread.
  void Stop();
  // Blocks until Stop() has finished.
  void Wait();

  class Impl;

 private:
  explicit Worker(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace dgpt::net
