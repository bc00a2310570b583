#include "plugin_library.hpp"

#include <dlfcn.h>

namespace troupe {

expected<std::shared_ptr<plugin_library>> plugin_library::open(const manifest& m) {
  auto fail = [&](std::string why) {
    return make_error(errc::library_error, m.library + ": " + why + " (plugin '" + m.name +
                                               "', manifest " + m.path + ")");
  };
  void* handle = dlopen(m.library.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) return fail(std::string("cannot load: ") + dlerror());
  auto close = [&] { dlclose(handle); };
  auto entry = reinterpret_cast<troupe_plugin_entry_fn>(dlsym(handle, TROUPE_ENTRY_SYMBOL));
  if (entry == nullptr) {
    close();
    return fail("missing symbol '" TROUPE_ENTRY_SYMBOL "'");
  }
  const troupe_plugin_api* api = entry();
  if (api == nullptr) {
    close();
    return fail(TROUPE_ENTRY_SYMBOL "() returned NULL");
  }
  if (api->abi_version != TROUPE_ABI_VERSION) {
    auto v = api->abi_version;
    close();
    return fail("library speaks ABI " + std::to_string(v) + ", this host speaks ABI " +
                std::to_string(TROUPE_ABI_VERSION));
  }
  if (api->name == nullptr || m.name != api->name) {
    std::string got = api->name ? api->name : "(null)";
    close();
    return fail("library calls itself '" + got + "', the manifest says '" + m.name + "'");
  }
  const char* missing = !api->create ? "create" : !api->start ? "start" : !api->process ? "process"
                        : !api->stop ? "stop" : !api->destroy ? "destroy" : nullptr;
  if (missing != nullptr) {
    close();
    return fail(std::string("function '") + missing + "' is NULL in the plugin table");
  }
  return std::shared_ptr<plugin_library>(new plugin_library(handle, api, m.library));
}

plugin_library::~plugin_library() { dlclose(handle_); }

}  // namespace troupe
