// A self-contained SVG stacked horizontal bar chart (no scripts, fonts or external files), for
// `dgpt bench --svg`: each bar is split into labelled segments, with a legend and an axis.
#pragma once

#include <string>
#include <vector>

namespace dgpt::bench {

struct ChartSegment {
  std::string label;
  double value = 0;   // negative or non-finite values are drawn as 0
  std::string color;  // "#rrggbb"; empty: the next palette colour for a new label
};

struct ChartBar {
  std::string label;
  std::vector<ChartSegment> segments;  // stacked left to right
};

struct ChartOptions {
  std::string title;
  std::string unit = "ms";  // shown on the axis, the totals and the legend
  int width = 960;          // pixels
};

// The SVG document. Every segment is one <rect class="segment"> (even when its width is 0) with
// a <title> tooltip; legend swatches are <rect class="swatch">, one per distinct label. With one
// bar the legend also gives each segment's value and share of the total.
std::string StackedBarChartSvg(const std::vector<ChartBar>& bars, const ChartOptions& options);

// Escapes &, <, >, " and ' for XML text and attribute values.
std::string XmlEscape(const std::string& text);

}  // namespace dgpt::bench
