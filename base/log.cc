#include "base/log.h"

#include <chrono>
#include <cstdio>
#include <ctime>
#include <mutex>

namespace dgpt {

void LogLine(std::string_view component, std::string_view message) {
  using namespace std::chrono;
  const auto now = system_clock::now();
  const std::time_t seconds = system_clock::to_time_t(now);
  const int millis =
      static_cast<int>(duration_cast<milliseconds>(now.time_since_epoch()).count() % 1000);
  std::tm utc{};
  gmtime_r(&seconds, &utc);
  char stamp[32];
  std::strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &utc);
  // One fprintf per line so lines from different threads never interleave.
  std::string line = fmt::format("{}.{:03d}Z {} {}\n", stamp, millis, component, message);
  for (size_t i = 0; i + 1 < line.size(); ++i) {
    if (line[i] == '\n' || line[i] == '\r') line[i] = ' ';
  }
  std::fputs(line.c_str(), stderr);
}

}  // namespace dgpt
