// Which frames an instance has already taken, so that a frame sent again (a sender's
// successor replaying what was not acknowledged, a restarted source starting over) is
// dropped instead of processed twice.
//
// Per stream, a bounded window over seq: a bit for each of the `capacity` seqs up to the
// highest seen, for the first (or only) output of an input (part 0); everything below the
// window counts as seen. Further parts of an input (part > 0, rarer) are kept as keys, the
// `capacity` most recent, with a floor at the highest key evicted; a key at or below the
// floor counts as seen. Frames of a stream may arrive out of order by less than `capacity`
// seqs (window x replicas is far less) without a fresh frame being taken for a duplicate.
// Memory does not grow with the length of a run. Admitting a part-0 frame costs a few
// bit operations. Not thread-safe.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <set>
#include <unordered_map>
#include <utility>
#include <vector>

namespace troupe {

class dedupe_window {
 public:
  explicit dedupe_window(size_t capacity = 4096)
      : capacity_(capacity < 1 ? 1 : capacity), words_((capacity_ + 63) / 64) {}

  /// True if (stream, seq, part) is new, and remembers it; false for a frame seen before.
  bool admit(uint64_t stream, uint64_t seq, uint32_t part) {
    auto& w = streams_[stream];
    if (part > 0) return admit_part(w, seq, part);
    if (w.bits.empty()) w.bits.assign(words_, 0);
    if (seq < w.base) return false;  // below the window: seen
    if (seq >= w.base + span()) advance(w, seq + 1 - span());
    auto i = (seq - w.base + w.first) % span();
    auto& word = w.bits[i / 64];
    auto bit = uint64_t{1} << (i % 64);
    if (word & bit) return false;
    word |= bit;
    return true;
  }

 private:
  using key = std::pair<uint64_t, uint32_t>;
  struct window {
    uint64_t base = 0;  // the lowest seq the bits cover
    size_t first = 0;   // the bit that stands for base (the bits are a ring)
    std::vector<uint64_t> bits;
    std::set<key> parts;  // part > 0
    std::optional<key> floor;
  };
  uint64_t span() const { return words_ * 64; }

  // Moves the window up so that it starts at new_base; the seqs it leaves count as seen.
  void advance(window& w, uint64_t new_base) {
    auto shift = new_base - w.base;
    if (shift >= span()) {
      std::fill(w.bits.begin(), w.bits.end(), 0);
      w.first = 0;
    } else {
      for (uint64_t k = 0; k < shift; ++k) {
        auto i = (w.first + k) % span();
        w.bits[i / 64] &= ~(uint64_t{1} << (i % 64));
      }
      w.first = (w.first + shift) % span();
    }
    w.base = new_base;
  }

  bool admit_part(window& w, uint64_t seq, uint32_t part) {
    key k{seq, part};
    if (w.floor && k <= *w.floor) return false;
    if (!w.parts.insert(k).second) return false;
    if (w.parts.size() > capacity_) {
      w.floor = *w.parts.begin();
      w.parts.erase(w.parts.begin());
    }
    return true;
  }

  size_t capacity_;
  size_t words_;
  std::unordered_map<uint64_t, window> streams_;
};

}  // namespace troupe
