// A framed TCP connection with deadlines, over Asio. Calls look synchronous — Send and Receive
// return when the frame is through or the deadline passes — which keeps the worker and
// coordinator logic straight-line. Each connection owns its io_context: call Send/Receive from
// one thread at a time (a connection is either read by one thread or written by one thread,
// or used request/reply by one thread). Close() may be called from any thread.
#pragma once

#include <asio.hpp>
#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <string>

#include "base/status.h"
#include "net/auth.h"
#include "net/messages.h"

namespace dgpt::net {

using Duration = std::chrono::milliseconds;
inline constexpr Duration kNoTimeout = Duration::max();

// Splits "HOST:PORT" or "[V6]:PORT"; the error says what was expected.
Status ParseHostPort(const std::string& address, std::string* host, uint16_t* port);

class Connection {
 public:
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  static Result<std::unique_ptr<Connection>> Connect(const std::string& address, Duration timeout);

  Status Send(const Message& message, Duration timeout);
  // Errors: "connection closed by peer", "timed out after N ms", a malformed frame (the
  // connection is unusable afterwards in every case).
  Result<Message> Receive(Duration timeout);
  // Thread-safe; a pending Receive returns "connection closed".
  void Close();
  bool closed() const { return closed_; }

  const std::string& peer() const { return peer_; }  // "HOST:PORT"
  std::string local_host() const;                    // our address on this connection
  void set_max_frame_bytes(uint32_t bytes) { max_frame_bytes_ = bytes; }

 private:
  friend class Listener;
  Connection();
  // Runs the io_context until `done` or the deadline; on a timeout the socket is closed.
  Status RunUntil(const bool& done, std::chrono::steady_clock::time_point deadline,
                  const char* what);
  void CloseSocket();

  asio::io_context io_;
  asio::ip::tcp::socket socket_;
  std::mutex socket_mutex_;  // orders Close()'s shutdown() against the socket being released
  std::string peer_;
  std::atomic<bool> closed_{false};
  uint32_t max_frame_bytes_ = kDefaultMaxFrameBytes;
  std::vector<uint8_t> buffer_;
};

class Listener {
 public:
  ~Listener();
  // "HOST:PORT"; port 0 picks a free port (see port()).
  static Result<std::unique_ptr<Listener>> Listen(const std::string& address);
  uint16_t port() const { return port_; }
  const std::string& host() const { return host_; }
  // Blocks until a connection arrives or Close() is called.
  Result<std::unique_ptr<Connection>> Accept();
  void Close();  // thread-safe

 private:
  Listener();
  asio::io_context io_;
  asio::ip::tcp::acceptor acceptor_;
  std::string host_;
  uint16_t port_ = 0;
  std::atomic<bool> closed_{false};
};

struct HandshakeOptions {
  Role role = Role::kControl;
  std::string node_name;
  const AuthKey* key = nullptr;  // null: no authentication
  bool connected_side = true;    // true for the side that called Connect
  uint32_t max_frame_bytes = kDefaultMaxFrameBytes;
  uint32_t cores = 0;
  uint64_t free_memory_bytes = 0;
};

// Exchanges HELLO (and AUTH when either side has a key) and returns the peer's HELLO. On failure
// the peer is sent an ERROR with the reason when possible.
Result<Hello> Handshake(Connection& connection, const HandshakeOptions& options, Duration timeout);

// Sends ERROR(code, message) with a short deadline, ignoring failures (best effort before close).
void SendErrorQuietly(Connection& connection, ErrorCode code, const std::string& message,
                      uint64_t request_id = 0);

// Free memory as the kernel reports it (MemAvailable), for HELLO.
uint64_t AvailableMemoryBytes();

}  // namespace dgpt::net
