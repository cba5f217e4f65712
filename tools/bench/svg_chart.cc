#include "tools/bench/svg_chart.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <map>

namespace dgpt::bench {

namespace {

// Tableau 10 plus two: distinct for the usual dozen segments, readable under white text.
constexpr const char* kPalette[] = {"#4e79a7", "#f28e2b", "#e15759", "#76b7b2",
                                    "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
                                    "#9c755f", "#bab0ac", "#1f77b4", "#8c564b"};
constexpr int kCharPx = 7;  // rough width of a 12 px sans-serif character
constexpr int kBarHeight = 26, kBarGap = 12, kTop = 44, kLegendRow = 18;

double Clean(double value) {
  return std::isfinite(value) && value > 0 ? value : 0;
}

// 1, 2 or 5 times a power of ten, so that about five ticks cover `max`.
double TickStep(double max) {
  const double raw = max / 5;
  const double magnitude = std::pow(10.0, std::floor(std::log10(raw)));
  for (double factor : {1.0, 2.0, 5.0}) {
    if (raw <= factor * magnitude) return factor * magnitude;
  }
  return 10 * magnitude;
}

// Enough decimals to tell ticks `step` apart.
std::string FormatTick(double value, double step) {
  const int decimals = step >= 1 ? 0 : static_cast<int>(std::ceil(-std::log10(step)));
  return fmt::format("{:.{}f}", value, decimals);
}

std::string FormatValue(double value) {
  return fmt::format("{:.{}f}", value, value >= 100 ? 1 : value >= 1 ? 2 : 3);
}

}  // namespace

std::string XmlEscape(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&apos;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

std::string StackedBarChartSvg(const std::vector<ChartBar>& bars, const ChartOptions& options) {
  // Colours by label, in first-seen order, so a label keeps its colour across bars.
  std::vector<std::string> labels;
  std::map<std::string, std::string> colors;
  std::map<std::string, double> single_values;
  double max_total = 0;
  size_t longest_label = 0;
  for (const ChartBar& bar : bars) {
    double total = 0;
    for (const ChartSegment& segment : bar.segments) {
      total += Clean(segment.value);
      if (!colors.count(segment.label)) {
        const std::string palette = kPalette[colors.size() % std::size(kPalette)];
        colors[segment.label] = segment.color.empty() ? palette : segment.color;
        labels.push_back(segment.label);
      }
      single_values[segment.label] += Clean(segment.value);
    }
    max_total = std::max(max_total, total);
    longest_label = std::max(longest_label, bar.label.size());
  }
  const double step = max_total > 0 ? TickStep(max_total) : 0.2;
  const double axis_max = max_total > 0 ? std::ceil(max_total / step - 1e-9) * step : 1.0;

  const int width = std::max(options.width, 480);
  const int left = std::clamp(static_cast<int>(longest_label) * kCharPx + 16, 80, 280);
  const int plot = width - left - 110;
  const int axis_y = kTop + static_cast<int>(bars.size()) * (kBarHeight + kBarGap);
  const int legend_y = axis_y + 60;
  const int legend_rows = static_cast<int>((labels.size() + 1) / 2);
  const int height = legend_y + legend_rows * kLegendRow + 12;
  auto x_of = [&](double value) { return left + plot * value / axis_max; };

  std::string svg = fmt::format(
      "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{0}\" height=\"{1}\" "
      "viewBox=\"0 0 {0} {1}\" font-family=\"sans-serif\" font-size=\"12\">\n"
      "<rect class=\"background\" x=\"0\" y=\"0\" width=\"{0}\" height=\"{1}\" fill=\"#fff\"/>\n"
      "<text x=\"{2}\" y=\"24\" font-size=\"15\" font-weight=\"bold\">{3}</text>\n",
      width, height, 12, XmlEscape(options.title));

  for (size_t b = 0; b < bars.size(); ++b) {
    const ChartBar& bar = bars[b];
    const int y = kTop + static_cast<int>(b) * (kBarHeight + kBarGap);
    svg += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>\n", left - 8,
                       y + kBarHeight / 2 + 4, XmlEscape(bar.label));
    double at = 0;
    for (const ChartSegment& segment : bar.segments) {
      const double value = Clean(segment.value);
      const double x0 = x_of(at), x1 = x_of(at + value);
      svg += fmt::format(
          "<rect class=\"segment\" x=\"{:.2f}\" y=\"{}\" width=\"{:.2f}\" height=\"{}\" "
          "fill=\"{}\"><title>{}: {} {}</title></rect>\n",
          x0, y, x1 - x0, kBarHeight, colors[segment.label], XmlEscape(segment.label),
          FormatValue(value), XmlEscape(options.unit));
      if (x1 - x0 >= 44) {  // the value fits inside the segment
        svg += fmt::format(
            "<text x=\"{:.2f}\" y=\"{}\" text-anchor=\"middle\" fill=\"#fff\">{}</text>\n",
            (x0 + x1) / 2, y + kBarHeight / 2 + 4, FormatValue(value));
      }
      at += value;
    }
    svg += fmt::format("<text x=\"{:.2f}\" y=\"{}\">{} {}</text>\n", x_of(at) + 6,
                       y + kBarHeight / 2 + 4, FormatValue(at), XmlEscape(options.unit));
  }

  // Axis with ticks.
  svg += fmt::format("<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#333\"/>\n", left,
                     axis_y, left + plot, axis_y);
  const int ticks = static_cast<int>(std::lround(axis_max / step));
  for (int i = 0; i <= ticks; ++i) {
    const double x = x_of(i * step);
    svg += fmt::format(
        "<line x1=\"{0:.2f}\" y1=\"{1}\" x2=\"{0:.2f}\" y2=\"{2}\" stroke=\"#333\"/>"
        "<text x=\"{0:.2f}\" y=\"{3}\" text-anchor=\"middle\">{4}</text>\n",
        x, axis_y, axis_y + 5, axis_y + 18, FormatTick(i * step, step));
  }
  svg += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n", left + plot / 2,
                     axis_y + 34, XmlEscape(options.unit));

  // Legend, two columns.
  const double total = bars.size() == 1 ? max_total : 0;
  const int column = (width - 24) / 2;
  for (size_t i = 0; i < labels.size(); ++i) {
    const int x = 12 + static_cast<int>(i % 2) * column;
    const int y = legend_y + static_cast<int>(i / 2) * kLegendRow;
    std::string text = labels[i];
    if (bars.size() == 1) {
      const double value = single_values[labels[i]];
      text += fmt::format(": {} {} ({:.0f}%)", FormatValue(value), options.unit,
                          total > 0 ? 100 * value / total : 0.0);
    }
    svg += fmt::format(
        "<rect class=\"swatch\" x=\"{}\" y=\"{}\" width=\"12\" height=\"12\" fill=\"{}\"/>"
        "<text x=\"{}\" y=\"{}\">{}</text>\n",
        x, y - 10, colors[labels[i]], x + 18, y, XmlEscape(text));
  }
  svg += "</svg>\n";
  return svg;
}

}  // namespace dgpt::bench
