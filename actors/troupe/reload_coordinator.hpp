// Reloading a stage's plugin while its pipeline runs, apart from the actors that carry it out.
//
// `next_version` says what a reload brings: the pipeline's plan with the stage's new manifest
// and config, checked as a pipeline file's stage is (the same plugin, a config its schema
// takes, resources the stage may only tighten). It reads the manifest file and nothing else.
//
// `reload_coordinator` keeps the order: one reload at a time; a request while one is under way
// waits, and the waiting ones start in the order they came. It holds the slots the reload
// brings in and those it retires, and says when the new version serves (every incoming slot
// runs). The manager spawns, drains and answers; this decides nothing about actors.
#pragma once

#include <troupe/error.hpp>
#include <troupe/messages.hpp>
#include <troupe/pipeline.hpp>
#include <troupe/plugin_library.hpp>

#include <caf/response_promise.hpp>

#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <vector>

namespace troupe {

/// The plan with stage `stage` at the version `request` asks for: request.manifest (or the
/// stage's own, read again) with request.config laid over the stage's config. Errors name the
/// reload, the stage and the file; errc::refused for a manifest of another plugin,
/// errc::invalid_config for a config or resources it does not take.
expected<std::shared_ptr<plan>> next_version(const plan& current, size_t stage, const reload_request& request);

class reload_coordinator {
 public:
  /// A reload under way.
  struct reload {
    size_t stage = 0;
    std::shared_ptr<const troupe::plan> plan;  // the next version's
    std::shared_ptr<plugin_library> library;   // likewise (embedded stages)
    std::vector<size_t> old;                   // slots that serve now and retire once it serves
    std::vector<size_t> incoming;              // slots of the new version, not yet serving
    caf::response_promise promise;             // answers the request: nothing, or an error
  };
  /// A request that waits for the one under way.
  struct waiting {
    reload_request request;
    caf::response_promise promise;
  };

  bool under_way() const { return current_.has_value(); }
  /// The reload under way; only while under_way().
  const reload& current() const { return *current_; }
  reload& current() { return *current_; }

  /// Starts r; there is none under way.
  void begin(reload r);
  /// Whether the new version serves: every incoming slot runs (running(slot)).
  bool serves(const std::function<bool(size_t)>& running) const;
  /// Ends the reload under way, served or failed, and hands it back to be answered.
  reload end();

  /// Queues a request behind the reload under way.
  void wait(reload_request request, caf::response_promise promise);
  /// The next waiting request, once none is under way; nothing otherwise.
  std::optional<waiting> next();
  /// Every waiting request, for a pipeline that stops (they are answered with an error).
  std::deque<waiting> take_waiting();
  size_t waiting_count() const { return waiting_.size(); }

 private:
  std::optional<reload> current_;
  std::deque<waiting> waiting_;
};

}  // namespace troupe
