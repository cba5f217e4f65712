// One-line structured logs on stderr: "TIME COMPONENT message", e.g.
// "2026-11-24T13:00:00.123Z worker[4:8] accepted control connection from 10.0.0.1:51234".
#pragma once

#include <fmt/format.h>

#include <string_view>

namespace dgpt {

void LogLine(std::string_view component, std::string_view message);

template <typename... Args>
void Log(std::string_view component, fmt::format_string<Args...> format, Args&&... args) {
  LogLine(component, fmt::format(format, std::forward<Args>(args)...));
}

}  // namespace dgpt
