#include "net/connection.h"

#include <fmt/format.h>

#include <sys/socket.h>

#include <fstream>
#include <thread>

namespace dgpt::net {

using Clock = std::chrono::steady_clock;

namespace {

Clock::time_point DeadlineAfter(Duration timeout) {
  return timeout == kNoTimeout ? Clock::time_point::max() : Clock::now() + timeout;
}

std::string Describe(const asio::ip::tcp::endpoint& endpoint) {
  const auto address = endpoint.address();
  return address.is_v6() ? fmt::format("[{}]:{}", address.to_string(), endpoint.port())
                         : fmt::format("{}:{}", address.to_string(), endpoint.port());
}

}  // namespace

Status ParseHostPort(const std::string& address, std::string* host, uint16_t* port) {
  const size_t colon = address.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == address.size()) {
    return Status::Error("\"" + address + "\" is not HOST:PORT");
  }
  std::string h = address.substr(0, colon);
  if (h.size() >= 2 && h.front() == '[' && h.back() == ']') h = h.substr(1, h.size() - 2);
  const std::string port_text = address.substr(colon + 1);
  char* end = nullptr;
  const long value = std::strtol(port_text.c_str(), &end, 10);
  if (*end != '\0' || value < 0 || value > 65535) {
    return Status::Error("\"" + address + "\": bad port \"" + port_text + "\"");
  }
  *host = h;
  *port = static_cast<uint16_t>(value);
  return Status::Ok();
}

Connection::Connection() : socket_(io_) {}

Connection::~Connection() {
  CloseSocket();
}

void Connection::CloseSocket() {
  std::lock_guard lock(socket_mutex_);
  asio::error_code ignored;
  socket_.close(ignored);
}

Status Connection::RunUntil(const bool& done, Clock::time_point deadline, const char* what) {
  io_.restart();
  if (deadline == Clock::time_point::max()) {
    io_.run();
  } else {
    io_.run_until(deadline);
  }
  if (done) return Status::Ok();
  // Deadline passed: abort the operation and let its handler run before returning.
  CloseSocket();
  closed_ = true;
  io_.restart();
  io_.run();
  return Status::Error(fmt::format("{} {}: timed out", what, peer_));
}

Result<std::unique_ptr<Connection>> Connection::Connect(const std::string& address,
                                                        Duration timeout) {
  std::string host;
  uint16_t port = 0;
  DGPT_RETURN_IF_ERROR(ParseHostPort(address, &host, &port));
  auto connection = std::unique_ptr<Connection>(new Connection());
  connection->peer_ = address;
  asio::error_code error;
  asio::ip::tcp::resolver resolver(connection->io_);
  auto endpoints = resolver.resolve(host, std::to_string(port), error);
  if (error) return Status::Error(fmt::format("cannot resolve {}: {}", host, error.message()));

  bool done = false;
  asio::async_connect(connection->socket_, endpoints,
                      [&](const asio::error_code& ec, const asio::ip::tcp::endpoint&) {
                        error = ec;
                        done = true;
                      });
  Status status = connection->RunUntil(done, DeadlineAfter(timeout), "connecting to");
  if (!status.ok()) return status;
  if (error)
    return Status::Error(fmt::format("cannot connect to {}: {}", address, error.message()));
  connection->socket_.set_option(asio::ip::tcp::no_delay(true), error);  // latency over batching
  return connection;
}

Status Connection::Send(const Message& message, Duration timeout) {
  if (closed_) return Status::Error("connection to " + peer_ + " is closed");
  buffer_.clear();
  EncodeMessage(message, &buffer_);
  bool done = false;
  asio::error_code error;
  asio::async_write(socket_, asio::buffer(buffer_), [&](const asio::error_code& ec, size_t) {
    error = ec;
    done = true;
  });
  DGPT_RETURN_IF_ERROR(RunUntil(done, DeadlineAfter(timeout), "sending to"));
  if (error) {
    closed_ = true;
    return Status::Error(fmt::format("sending to {}: {}", peer_, error.message()));
  }
  return Status::Ok();
}

Result<Message> Connection::Receive(Duration timeout) {
  if (closed_) return Status::Error("connection to " + peer_ + " is closed");
  const auto deadline = DeadlineAfter(timeout);
  auto read_exactly = [&](uint8_t* data, size_t size) -> Status {
    bool done = false;
    asio::error_code error;
    asio::async_read(socket_, asio::buffer(data, size), [&](const asio::error_code& ec, size_t) {
      error = ec;
      done = true;
    });
    DGPT_RETURN_IF_ERROR(RunUntil(done, deadline, "receiving from"));
    if (error) {
      closed_ = true;
      if (error == asio::error::eof) return Status::Error("connection closed by " + peer_);
      if (error == asio::error::operation_aborted) return Status::Error("connection closed");
      return Status::Error(fmt::format("receiving from {}: {}", peer_, error.message()));
    }
    return Status::Ok();
  };
  std::array<uint8_t, kHeaderSize> header_bytes;
  DGPT_RETURN_IF_ERROR(read_exactly(header_bytes.data(), header_bytes.size()));
  auto header = DecodeHeader(header_bytes, max_frame_bytes_);
  if (!header.ok()) {
    closed_ = true;
    return header.status();
  }
  // The length was checked against our limit before this allocation.
  buffer_.resize(header->payload_length);
  if (!buffer_.empty()) {
    Status status = read_exactly(buffer_.data(), buffer_.size());
    if (!status.ok()) {
      return Status::Error(status.message() + " (inside a " + MessageTypeName(header->type) +
                           " frame)");
    }
  }
  auto message = DecodePayload(*header, buffer_);
  if (!message.ok()) closed_ = true;
  return message;
}

void Connection::Close() {
  closed_ = true;
  {
    // shutdown() is safe from any thread while the descriptor is open: the peer sees the close
    // at once, and a pending operation on the owning thread fails.
    std::lock_guard lock(socket_mutex_);
    if (socket_.is_open()) ::shutdown(socket_.native_handle(), SHUT_RDWR);
  }
  // Releasing the socket belongs to the thread running io_ (or the destructor).
  asio::post(io_, [this] { CloseSocket(); });
}

std::string Connection::local_host() const {
  asio::error_code error;
  auto endpoint = socket_.local_endpoint(error);
  return error ? std::string("127.0.0.1") : endpoint.address().to_string();
}

Listener::Listener() : acceptor_(io_) {}

Listener::~Listener() {
  asio::error_code ignored;
  acceptor_.close(ignored);
}

Result<std::unique_ptr<Listener>> Listener::Listen(const std::string& address) {
  std::string host;
  uint16_t port = 0;
  DGPT_RETURN_IF_ERROR(ParseHostPort(address, &host, &port));
  auto listener = std::unique_ptr<Listener>(new Listener());
  asio::error_code error;
  const auto ip = asio::ip::make_address(host, error);
  if (error)
    return Status::Error("cannot listen on " + address + ": \"" + host + "\" is not an IP address");
  const asio::ip::tcp::endpoint endpoint(ip, port);
  listener->acceptor_.open(endpoint.protocol(), error);
  if (!error) listener->acceptor_.set_option(asio::socket_base::reuse_address(true), error);
  if (!error) listener->acceptor_.bind(endpoint, error);
  if (!error) listener->acceptor_.listen(asio::socket_base::max_listen_connections, error);
  if (error) return Status::Error(fmt::format("cannot listen on {}: {}", address, error.message()));
  listener->host_ = host;
  listener->port_ = listener->acceptor_.local_endpoint().port();
  return listener;
}

Result<std::unique_ptr<Connection>> Listener::Accept() {
  if (closed_) return Status::Error("listener closed");
  auto connection = std::unique_ptr<Connection>(new Connection());
  asio::error_code error;
  bool done = false;
  acceptor_.async_accept(connection->socket_, [&](const asio::error_code& ec) {
    error = ec;
    done = true;
  });
  io_.restart();
  io_.run();
  if (!done || error) {
    return Status::Error(closed_ ? "listener closed" : "accept failed: " + error.message());
  }
  asio::error_code ignored;
  connection->peer_ = Describe(connection->socket_.remote_endpoint(ignored));
  connection->socket_.set_option(asio::ip::tcp::no_delay(true), ignored);
  return connection;
}

void Listener::Close() {
  closed_ = true;
  asio::post(io_, [this] {
    asio::error_code ignored;
    acceptor_.close(ignored);
  });
}

void SendErrorQuietly(Connection& connection, ErrorCode code, const std::string& message,
                      uint64_t request_id) {
  Message error{.flags = 0,
                .request_id = request_id,
                .payload = ErrorMsg{code, message.substr(0, kMaxStringBytes)}};
  (void)connection.Send(error, Duration(1000));
}

Result<Hello> Handshake(Connection& connection, const HandshakeOptions& options, Duration timeout) {
  Hello own;
  own.role = options.role;
  own.node_name = options.node_name.substr(0, 255);
  own.cores = options.cores;
  own.free_memory_bytes = options.free_memory_bytes;
  own.max_frame_bytes = options.max_frame_bytes;
  own.auth_required = options.key != nullptr;
  own.nonce = RandomNonce();
  DGPT_RETURN_IF_ERROR(connection.Send(Message{.payload = own}, timeout));

  auto reply = connection.Receive(timeout);
  if (!reply.ok()) return reply.status();
  if (auto* error = std::get_if<ErrorMsg>(&reply->payload)) {
    return Status::Error(fmt::format("{} refused the connection: {}: {}", connection.peer(),
                                     ErrorCodeName(error->code), error->message));
  }
  const Hello* peer = std::get_if<Hello>(&reply->payload);
  if (!peer) {
    SendErrorQuietly(connection, ErrorCode::kBadFrame, "expected HELLO first");
    return Status::Error(fmt::format("{}: expected HELLO, got {}", connection.peer(),
                                     MessageTypeName(reply->type())));
  }
  if (peer->max_version < kProtocolVersion || peer->min_version > kProtocolVersion) {
    const std::string reason = fmt::format("no protocol version in common (ours {}, theirs {}..{})",
                                           kProtocolVersion, peer->min_version, peer->max_version);
    SendErrorQuietly(connection, ErrorCode::kVersionMismatch, reason);
    return Status::Error(connection.peer() + ": " + reason);
  }
  if (peer->auth_required && !options.key) {
    SendErrorQuietly(connection, ErrorCode::kAuthFailed, "this node has no auth key");
    return Status::Error(connection.peer() +
                         " requires an auth key; pass the same --auth-key-file to both sides");
  }
  if (options.key) {
    if (!peer->auth_required) {
      SendErrorQuietly(connection, ErrorCode::kAuthFailed, "an auth key is required");
      return Status::Error(connection.peer() + " did not offer authentication (no auth key set)");
    }
    const Bytes32 mac = ComputeMac(*options.key, options.connected_side, peer->nonce, own.nonce);
    DGPT_RETURN_IF_ERROR(connection.Send(Message{.payload = Auth{mac}}, timeout));
    auto auth = connection.Receive(timeout);
    if (!auth.ok()) return auth.status();
    if (auto* error = std::get_if<ErrorMsg>(&auth->payload)) {
      return Status::Error(fmt::format("{} refused the connection: {}: {}", connection.peer(),
                                       ErrorCodeName(error->code), error->message));
    }
    const Auth* peer_auth = std::get_if<Auth>(&auth->payload);
    const Bytes32 expected =
        ComputeMac(*options.key, !options.connected_side, own.nonce, peer->nonce);
    if (!peer_auth || !MacEquals(peer_auth->mac, expected)) {
      SendErrorQuietly(connection, ErrorCode::kAuthFailed, "wrong auth key");
      return Status::Error(connection.peer() + ": authentication failed (wrong auth key)");
    }
  }
  connection.set_max_frame_bytes(options.max_frame_bytes);
  return *peer;
}

uint64_t AvailableMemoryBytes() {
  std::ifstream meminfo("/proc/meminfo");
  std::string key;
  uint64_t kilobytes = 0;
  std::string unit;
  while (meminfo >> key >> kilobytes >> unit) {
    if (key == "MemAvailable:") return kilobytes * 1024;
  }
  return 0;
}

}  // namespace dgpt::net
