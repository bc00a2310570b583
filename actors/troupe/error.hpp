// Troupe's error codes and the caf::error they travel in.
//
// Every error carries a message that names the file, field, plugin or peer involved, so a
// user can act on it without reading code. Create with make_error(errc, text); read the
// text back with describe(err).
#pragma once

#include <caf/error.hpp>
#include <caf/expected.hpp>

#include <cstdint>
#include <optional>
#include <string>

namespace troupe {

enum class errc : uint8_t {
  // 0 is "no error" in CAF.
  invalid_manifest = 1,  // plugin.yaml unreadable or not of the expected shape
  invalid_pipeline,      // pipeline.yaml likewise
  invalid_config,        // a config value outside its schema
  plugin_not_found,      // no plugin of that name on the search paths
  library_error,         // dlopen failed, symbol missing, ABI or name mismatch
  dependency_error,      // missing dependency or version out of range
  cycle,                 // start order impossible
  start_failed,          // create or start failed
  lost,                  // crash, fatal error, deadline passed
  teardown_failed,       // stop failed or passed its deadline
  io_error,              // files, sockets
  invalid_node_config,   // node.yaml unreadable or not of the expected shape
  placement_refused,     // a pipeline's stages cannot be placed on the cluster's nodes
  store_error,           // the cluster's store (etcd) did not answer, or refused
  invalid_record,        // a record in the cluster's store is not of the expected shape
  not_found,             // no pipeline or stage of that name
  not_running,           // the pipeline or stage does not run (still starting, finished, stopping)
  busy,                  // another change is under way: the same request may succeed once it is done
  refused,               // never possible as asked (a source's replicas, a stage on another node, a range)
  no_answer,             // an actor or node did not answer in time: it may be overloaded
  type_mismatch,         // an edge's media types do not meet, or its metadata lacks what its consumer needs
  no_room,               // a node's capacity does not hold what is asked (admission); it may once work stops
};

/// The Troupe code of an error; nullopt for no error or an error of another category.
std::optional<errc> code_of(const caf::error& err);

/// Whether the same request may succeed if made again later (busy, no_answer).
bool retryable(const caf::error& err);

/// Name of the error category in caf::error.
inline constexpr const char* error_category_name = "troupe";

caf::error make_error(errc code, std::string text);

/// The message an error was made with, prefixed by nothing; for a foreign error, CAF's text.
std::string describe(const caf::error& err);

template <class T>
using expected = caf::expected<T>;

}  // namespace troupe
