// Which frames an instance has already taken, so that a frame sent again (a sender's
// successor replaying what was not acknowledged, a restarted source starting over) is
// dropped instead of processed twice.
//
// Per stream, a bounded window: the `capacity` most recent (seq, part) keys, and a floor at
// the highest key evicted so far; a key at or below the floor counts as seen. Frames of a
// stream may arrive out of order by less than `capacity` keys (window x replicas is far
// less) without a fresh frame being taken for a duplicate. Memory does not grow with the
// length of a run: at most `capacity` keys per stream. Not thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <set>
#include <unordered_map>
#include <utility>

namespace troupe {

class dedupe_window {
 public:
  explicit dedupe_window(size_t capacity = 4096) : capacity_(capacity < 1 ? 1 : capacity) {}

  /// True if (stream, seq, part) is new, and remembers it; false for a frame seen before.
  bool admit(uint64_t stream, uint64_t seq, uint32_t part) {
    auto& w = streams_[stream];
    key k{seq, part};
    if (w.floor && k <= *w.floor) return false;
    if (!w.keys.insert(k).second) return false;
    if (w.keys.size() > capacity_) {
      w.floor = *w.keys.begin();
      w.keys.erase(w.keys.begin());
    }
    return true;
  }

 private:
  using key = std::pair<uint64_t, uint32_t>;
  struct window {
    std::set<key> keys;
    std::optional<key> floor;
  };
  size_t capacity_;
  std::unordered_map<uint64_t, window> streams_;
};

}  // namespace troupe
