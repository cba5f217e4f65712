// Status and Result<T>: recoverable errors as values, in the style of leveldb's Status.
// Every user-facing failure (bad checkpoint, bad config, missing file) travels as a Status
// whose message is one line saying what went wrong and, where it helps, what to do.
#pragma once

#include <cassert>
#include <optional>
#include <string>
#include <utility>

namespace dgpt {

class [[nodiscard]] Status {
 public:
  Status() = default;  // OK
  static Status Ok() { return Status(); }
  static Status Error(std::string message) { return Status(std::move(message)); }

  bool ok() const { return !message_.has_value(); }
  // REQUIRES: !ok()
  const std::string& message() const {
    assert(!ok());
    return *message_;
  }
  // Prefixes the message with context ("vocab.json: ..."); a no-op on OK.
  Status WithContext(const std::string& context) const {
    return ok() ? *this : Status(context + ": " + *message_);
  }

 private:
  explicit Status(std::string message) : message_(std::move(message)) {}
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
