// "Did you mean": the closest of some known names to one that was not found.
#pragma once

#include <algorithm>
#include <string>
#include <vector>

namespace troupe {

/// Edits (insert, delete, replace, swap of neighbours) that make a into b.
inline size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<std::vector<size_t>> d(a.size() + 1, std::vector<size_t>(b.size() + 1));
  for (size_t i = 0; i <= a.size(); ++i) d[i][0] = i;
  for (size_t j = 0; j <= b.size(); ++j) d[0][j] = j;
  for (size_t i = 1; i <= a.size(); ++i)
    for (size_t j = 1; j <= b.size(); ++j) {
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] != b[j - 1])});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1])
        d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
    }
  return d[a.size()][b.size()];
}

/// The known name nearest to typed, if it is a likely typo (two edits at most, and fewer than
/// half of typed's letters); else empty.
template <class Names>
std::string nearest(const std::string& typed, const Names& known) {
  std::string best;
  size_t best_d = std::min<size_t>(3, (typed.size() + 1) / 2);
  for (const std::string& k : known) {
    if (k == typed) continue;
    auto d = edit_distance(typed, k);
    if (d < best_d) {
      best_d = d;
      best = k;
    }
  }
  return best;
}

/// "; did you mean 'x'?" for the nearest known name, or nothing.
template <class Names>
std::string did_you_mean(const std::string& typed, const Names& known) {
  auto n = nearest(typed, known);
  return n.empty() ? std::string() : "; did you mean '" + n + "'?";
}

}  // namespace troupe
