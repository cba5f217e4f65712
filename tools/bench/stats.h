// Small statistics for `dgpt bench`: percentiles of latencies and the busy time of a set of
// possibly overlapping intervals (several sequences in the same phase at once).
#pragma once

#include <vector>

namespace dgpt::bench {

// The p-th percentile (p in [0, 100]) with linear interpolation between the closest ranks
// (numpy's default). 0 for an empty sample.
double Percentile(std::vector<double> values, double p);

double Mean(const std::vector<double>& values);  // 0 for an empty sample

// [begin, end) on one clock, in seconds.
struct Interval {
  double begin = 0;
  double end = 0;
};

// Length of the union of the intervals: how long at least one of them was running. For one
// sequence this is the plain sum; for concurrent sequences it does not count overlaps twice.
double UnionSeconds(std::vector<Interval> intervals);

}  // namespace dgpt::bench
