// An instance's mode, status and last failure on the admin interface (schema/node.capnp
// InstanceState), and back. The wire enums list the values of actors/troupe/lifecycle.hpp in their
// order; a value this node does not know (a malformed reply) reads as nullopt.
#pragma once

#include <node.capnp.h>

#include <troupe/lifecycle.hpp>
#include <troupe/manifest.hpp>

#include <cstdint>
#include <optional>

namespace troupe::cluster {

static_assert(static_cast<int>(wire::InstanceStatus::PAUSED) == static_cast<int>(instance_status::paused) &&
                  static_cast<int>(wire::InstanceStatus::FAILED) == static_cast<int>(instance_status::failed),
              "wire::InstanceStatus lists instance_status in its order");
static_assert(static_cast<int>(wire::FailureClass::TEARDOWN_FAILED) == static_cast<int>(failure_class::teardown_failed),
              "wire::FailureClass lists failure_class in its order");

inline wire::ExecMode to_wire(exec_mode m) {
  return m == exec_mode::isolated ? wire::ExecMode::ISOLATED : wire::ExecMode::EMBEDDED;
}
inline wire::InstanceStatus to_wire(instance_status s) { return static_cast<wire::InstanceStatus>(s); }
inline wire::FailureClass to_wire(failure_class f) { return static_cast<wire::FailureClass>(f); }

inline std::optional<exec_mode> from_wire(wire::ExecMode m) {
  if (m == wire::ExecMode::EMBEDDED) return exec_mode::embedded;
  if (m == wire::ExecMode::ISOLATED) return exec_mode::isolated;
  return std::nullopt;
}
inline std::optional<instance_status> from_wire(wire::InstanceStatus s) {
  if (static_cast<uint16_t>(s) > static_cast<uint16_t>(instance_status::paused)) return std::nullopt;
  return static_cast<instance_status>(s);
}
inline std::optional<failure_class> from_wire(wire::FailureClass f) {
  if (static_cast<uint16_t>(f) > static_cast<uint16_t>(failure_class::teardown_failed)) return std::nullopt;
  return static_cast<failure_class>(f);
}

}  // namespace troupe::cluster
