# Writes a C++ source defining dgpt::web::kIndexHtml from INPUT's bytes (run with cmake -P).
# The bytes go out as a hex array: no delimiter or escaping can break on what the HTML holds.
#   cmake -DINPUT=index.html -DOUTPUT=index_html.cc -P embed_file.cmake
file(READ "${INPUT}" hex HEX)
string(LENGTH "${hex}" hex_length)
math(EXPR size "${hex_length} / 2")
# "3c21..." -> "'\x3c','\x21',...", sixteen bytes per line (CMake regexes have no {16}).
# Character literals, not 0x.. integers: bytes over 0x7f would be narrowing errors in a char[].
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "'\\\\x\\1'," bytes "${hex}")
string(REPEAT "'.x..'," 16 sixteen_bytes)
string(REGEX REPLACE "(${sixteen_bytes})" "\\1\n    " bytes "${bytes}")
file(WRITE "${OUTPUT}.tmp"
  "// Generated from ${INPUT} by tools/web/embed_file.cmake. Do not edit.\n"
  "#include \"tools/web/index_html.h\"\n\n"
  "namespace dgpt::web {\n\n"
  "const char kIndexHtml[] = {\n    ${bytes}'\\0'};\n"
  "const size_t kIndexHtmlSize = ${size};\n\n"
  "}  // namespace dgpt::web\n")
# Only touch OUTPUT when it changed, so an unchanged page recompiles nothing.
file(COPY_FILE "${OUTPUT}.tmp" "${OUTPUT}" ONLY_IF_DIFFERENT)
file(REMOVE "${OUTPUT}.tmp")
