// A loaded plugin library: dlopen()ed once, checked against its manifest, unloaded when the
// last instance that uses it is gone.
#pragma once

#include <troupe/manifest.hpp>

#include <troupe/plugin.h>

#include <memory>
#include <string>

namespace troupe {

class plugin_library {
 public:
  /// Loads m.library and checks the entry symbol, ABI version (major equal to the host's,
  /// minor not above it, a table size that fits, reserved slots NULL), name and functions.
  /// Errors name the library file and what was wrong. A library loaded before from the same path
  /// is shared; with `fresh`, the file is loaded anew from a private copy of its current
  /// bytes (a new version put in place of the old one, for a reload).
  static expected<std::shared_ptr<plugin_library>> open(const manifest& m, bool fresh = false);

  /// The plugin's table as this host reads it: what the plugin's struct_size covers, the rest
  /// zero (an ABI 1.0 table ends after health).
  const troupe_plugin_api& api() const { return api_; }
  /// The ABI the library was built against: 1.0, 1.1, ...
  uint32_t abi_minor() const { return api_.abi_minor; }
  std::string abi() const { return std::to_string(api_.abi_major) + "." + std::to_string(api_.abi_minor); }
  const std::string& path() const { return path_; }

  ~plugin_library();
  plugin_library(const plugin_library&) = delete;
  plugin_library& operator=(const plugin_library&) = delete;

 private:
  plugin_library(void* handle, const troupe_plugin_api& api, std::string path, int copy_fd)
      : handle_(handle), api_(api), path_(std::move(path)), copy_fd_(copy_fd) {}
  void* handle_;
  troupe_plugin_api api_;
  std::string path_;
  int copy_fd_;  // the private copy a fresh load was made from; -1: none
};

}  // namespace troupe
