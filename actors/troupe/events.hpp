// Events: what happened to a node's pipelines, typed and in order. The manager records
// instance state changes (with the failure class and error), restarts, quarantines, dead
// letters, scaling, reloads and the pipeline's own states; a cluster node adds members going up
// and down (state up, down; detail: the member) and the placements it writes. A bounded ring keeps the latest for
// readers that come later; if a file is set, each event is also appended to it as a JSON line
// as it happens. Thread-safe.
#pragma once

#include <cstdint>
#include <cstdio>
#include <deque>
#include <mutex>
#include <string>
#include <vector>

namespace troupe {

enum class event_kind : uint8_t {
  pipeline,
  instance,
  restart,
  quarantine,
  dead_letter,
  scale,
  reload,
  node,
  placement,
  pause,
  eviction  // a node gave replicas of a stage back for a pipeline of higher priority
};
const char* to_string(event_kind k);

struct event {
  uint64_t seq = 0;     // per log, from 1, without gaps
  int64_t time_ms = 0;  // wall clock, milliseconds since the epoch
  event_kind kind = event_kind::pipeline;
  std::string node, pipeline, stage;  // stage: empty for the pipeline's own events; pipeline: empty for a node's
  int64_t replica = -1;               // -1: not about one instance
  uint64_t generation = 0;            // 0: not about one instance
  std::string state;                  // the state entered (running, failed, stopped, up, down, ...), if any
  std::string failure;                // the failure class (start_failed, lost, teardown_failed), if any
  std::string detail;                 // the error, or what changed
};

class event_log {
 public:
  explicit event_log(size_t capacity = 4096) : capacity_(capacity) {}
  ~event_log();
  event_log(const event_log&) = delete;
  event_log& operator=(const event_log&) = delete;

  /// Appends every event from now on to `path` as a JSON line; empty, or why it cannot.
  std::string write_to(const std::string& path);
  /// Records one, numbering and stamping it.
  void add(event e);
  /// The events kept with a seq above `after`, oldest first.
  std::vector<event> since(uint64_t after) const;
  /// How many were ever recorded (the seq of the latest).
  uint64_t count() const;

  /// One JSON object; `kind` as given (empty: e.kind's name).
  static std::string to_json(const event& e, const std::string& kind = {});

 private:
  mutable std::mutex mutex_;
  size_t capacity_;
  std::deque<event> ring_;
  uint64_t next_ = 1;
  std::FILE* file_ = nullptr;
  std::string path_;
  bool write_failed_ = false;
};

}  // namespace troupe
