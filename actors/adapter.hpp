// What runs a plugin instance's code: the embedded adapter (in this process) or the
// isolated adapter (in a worker process). The instance actor cannot tell them apart, and
// neither can the plugin.
//
// Not thread-safe: one call at a time (the instance actor guarantees it), except
// terminate(). Every call may block or hang; callers run them on the executor under a
// deadline.
#pragma once

#include "frame.hpp"
#include "manifest.hpp"

#include <troupe/plugin.h>

#include <string>
#include <vector>

namespace troupe {

struct call_result {
  troupe_status status = TROUPE_OK;
  std::string error;
  bool ok() const { return status == TROUPE_OK; }
};

class plugin_adapter {
 public:
  virtual ~plugin_adapter() = default;

  virtual call_result create(const config_values& config) = 0;
  virtual call_result start() = 0;
  /// in == nullptr asks a source for frames. Outputs are appended to out.
  virtual call_result process(const frame* in, std::vector<frame>& out) = 0;
  virtual call_result stop() = 0;
  virtual call_result health() = 0;
  virtual void destroy() = 0;
  /// From any thread: ends what runs the plugin's code, so that a call in progress returns
  /// (a worker process is killed). An embedded plugin cannot be ended: nothing happens.
  virtual void terminate() {}
  /// The process that runs the plugin's code, if it is not this one; -1 otherwise.
  virtual int worker_pid() const { return -1; }
};

}  // namespace troupe
