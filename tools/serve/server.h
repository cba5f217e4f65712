// The HTTP side of `dgpt serve` (cpp-httplib): routes, limits, streaming and error answers.
//
//   POST /v1/completions   OpenAI-compatible completions, streamed as server-sent events or not
//   POST /generate         {"prompt", "max_tokens", ...} -> {"text", ...}
//   GET  /v1/models        the one model served
//   GET  /health           every stage up or down, with its last round trip
//   GET  /metrics          Prometheus text
//   GET  /                 the web page
//
// Each connection is handled on one thread of a pool sized max_sequences + a few; a completion
// that finds max_sequences running is refused at once with 429 (no queue).
#pragma once

#include <memory>
#include <string>

#include "base/status.h"
#include "tools/serve/completion_engine.h"

namespace dgpt::serve {

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8080;  // 0: any free port
  size_t max_body_bytes = 1 << 20;
};

class Server {
 public:
  // Binds the listening socket. `engine` must outlive the server.
  static Result<std::unique_ptr<Server>> Bind(CompletionEngine& engine,
                                              const ServerOptions& options);
  ~Server();

  int port() const;
  // Serves until Stop(), then returns once the requests being handled are done; an error only
  // if listening fails.
  Status Serve();
  // Stops accepting connections. Thread-safe.
  void Stop();

  class Impl;

 private:
  explicit Server(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace dgpt::serve
