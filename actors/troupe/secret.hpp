// Tokens compared in a time that does not depend on where they first differ.
#pragma once

#include <algorithm>
#include <string_view>

namespace troupe {

inline bool same_secret(std::string_view given, std::string_view expected) {
  unsigned diff = given.size() != expected.size();
  for (size_t i = 0, n = std::max(given.size(), expected.size()); i < n; ++i)
    diff |= static_cast<unsigned char>(i < given.size() ? given[i] : 0) ^
            static_cast<unsigned char>(i < expected.size() ? expected[i] : 0);
  return diff == 0;
}

}  // namespace troupe
