#include "tools/bench/stats.h"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace dgpt::bench {

double Percentile(std::vector<double> values, double p) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const double rank = std::clamp(p, 0.0, 100.0) / 100.0 * static_cast<double>(values.size() - 1);
  const size_t below = static_cast<size_t>(std::floor(rank));
  const size_t above = std::min(below + 1, values.size() - 1);
  const double fraction = rank - static_cast<double>(below);
  return values[below] + (values[above] - values[below]) * fraction;
}

double Mean(const std::vector<double>& values) {
  if (values.empty()) return 0;
  return std::accumulate(values.begin(), values.end(), 0.0) / static_cast<double>(values.size());
}

double UnionSeconds(std::vector<Interval> intervals) {
  std::sort(intervals.begin(), intervals.end(),
            [](const Interval& a, const Interval& b) { return a.begin < b.begin; });
  double total = 0, covered_until = -INFINITY;
  for (const Interval& interval : intervals) {
    if (interval.end <= interval.begin) continue;
    const double from = std::max(interval.begin, covered_until);
    if (interval.end > from) total += interval.end - from;
    covered_until = std::max(covered_until, interval.end);
  }
  return total;
}

}  // namespace dgpt::bench
