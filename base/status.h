// Status and Result<T>: recoverable errors as values, in the style of leveldb's Status.
// Every user-facing failure (bad checkpoint, bad config, missing file) travels as a Status
// whose message is one line saying what went wrong and, where it helps, what to do. Its code says
// what kind of failure it is, so callers decide by code (retry, HTTP status, wire ERROR code),
// never by matching the message.
#pragma once

#include <cassert>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>

namespace dgpt {

enum class StatusCode : uint8_t {
  kOk = 0,
  kUnknown,             // an error nobody classified
  kInvalidArgument,     // the input itself is wrong: a flag, a file's contents, a request body
  kNotFound,            // a file, tensor, sequence or token that is not there
  kFailedPrecondition,  // valid, but not in this state: wrong model, version, layers not assigned
  kResourceExhausted,   // a bounded resource is full (KV cache slots, queue, context): retry later
  kUnavailable,         // a peer is down, unreachable, shutting down or closed the connection
  kDeadlineExceeded,    // a peer did not answer in time
  kUnauthenticated,     // a peer without the key, or with the wrong one
  kCancelled,           // the caller gave up (client hung up, Ctrl-C)
  kInternal,            // a bug or a broken invariant
};

// "invalid_argument", "resource_exhausted", ... (stable: logs and tests use them).
constexpr const char* StatusCodeName(StatusCode code) {
  switch (code) {
    case StatusCode::kOk:
      return "ok";
    case StatusCode::kUnknown:
      return "unknown";
    case StatusCode::kInvalidArgument:
      return "invalid_argument";
    case StatusCode::kNotFound:
      return "not_found";
    case StatusCode::kFailedPrecondition:
      return "failed_precondition";
    case StatusCode::kResourceExhausted:
      return "resource_exhausted";
    case StatusCode::kUnavailable:
      return "unavailable";
    case StatusCode::kDeadlineExceeded:
      return "deadline_exceeded";
    case StatusCode::kUnauthenticated:
      return "unauthenticated";
    case StatusCode::kCancelled:
      return "cancelled";
    case StatusCode::kInternal:
      return "internal";
  }
  return "unknown";
}

class [[nodiscard]] Status {
 public:
  Status() = default;  // OK
  static Status Ok() { return Status(); }
  static Status Error(std::string message) {
    return Status(StatusCode::kUnknown, std::move(message));
  }
  static Status Error(StatusCode code, std::string message) {
    assert(code != StatusCode::kOk);
    return Status(code, std::move(message));
  }

  bool ok() const { return !message_.has_value(); }
  StatusCode code() const { return ok() ? StatusCode::kOk : code_; }
  // REQUIRES: !ok()
  const std::string& message() const {
    assert(!ok());
    return *message_;
  }
  // Prefixes the message with context ("vocab.json: ..."); a no-op on OK.
  Status WithContext(const std::string& context) const {
    return ok() ? *this : Status(code_, context + ": " + *message_);
  }

 private:
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}
  StatusCode code_ = StatusCode::kOk;
  std::optional<std::string> message_;
};

// A value or an error Status. Small stand-in for C++23 std::expected.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : value_(std::move(value)) {}  // NOLINT: implicit on purpose
  Result(Status status) : status_(std::move(status)) { assert(!status_.ok()); }  // NOLINT

  bool ok() const { return value_.has_value(); }
  const Status& status() const { return status_; }
  T& value() & {
    assert(ok());
    return *value_;
  }
  const T& value() const& {
    assert(ok());
    return *value_;
  }
  T&& value() && {
    assert(ok());
    return std::move(*value_);
  }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }

 private:
  std::optional<T> value_;
  Status status_;
};

}  // namespace dgpt

// Returns early from the enclosing function when an expression yields a non-OK Status.
#define DGPT_RETURN_IF_ERROR(expr)               \
  do {                                           \
    ::dgpt::Status dgpt_status_ = (expr);        \
    if (!dgpt_status_.ok()) return dgpt_status_; \
  } while (0)
