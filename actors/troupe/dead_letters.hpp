// Frames given up on: each one killed its stage's instances dead_letter_after times in a
// row. A record names the frame, the stage and plugin, the failure class and the last
// error; records are kept for the summary and, if a path is set, appended to that file as
// JSON lines as they happen. Thread-safe.
#pragma once

#include <caf/meta/type_name.hpp>

#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

namespace troupe {

struct frame_key {
  uint64_t stream = 0;
  uint64_t seq = 0;
  uint32_t part = 0;
  auto operator<=>(const frame_key&) const = default;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, frame_key& x) {
  return f(caf::meta::type_name("frame_key"), x.stream, x.seq, x.part);
}

struct dead_letter {
  frame_key frame;
  std::string stage, plugin, failure, error;
  uint32_t losses = 0;
};

class dead_letter_log {
 public:
  /// path empty: keep records in memory only.
  explicit dead_letter_log(std::string path = {}) : path_(std::move(path)) {}
  /// Records one; returns an error text if the file could not be written (the record is
  /// kept in memory either way).
  std::string add(dead_letter d);
  std::vector<dead_letter> records() const;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  mutable std::mutex mutex_;
  std::vector<dead_letter> records_;
};

}  // namespace troupe
