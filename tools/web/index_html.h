// The web page of `dgpt serve` (tools/web/index.html), compiled into the binary so the server
// needs no files beside it. Generated at build time by tools/web/CMakeLists.txt.
#pragma once

#include <cstddef>

namespace dgpt::web {

// The page's bytes, followed by a '\0' that kIndexHtmlSize does not count.
extern const char kIndexHtml[];
extern const size_t kIndexHtmlSize;

}  // namespace dgpt::web
