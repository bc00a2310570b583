#include <troupe/plugin_library.hpp>

#include <dlfcn.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstring>

namespace troupe {

expected<std::shared_ptr<plugin_library>> plugin_library::open(const manifest& m, bool fresh) {
  auto fail = [&](std::string why) {
    return make_error(errc::library_error,
                      m.library + ": " + why + " (plugin '" + m.name + "', manifest " + m.path + ")");
  };
  // The dynamic loader hands out the library already loaded under a path: a fresh load goes
  // through an in-memory copy with a path of its own.
  int copy_fd = -1;
  std::string load_path = m.library;
  if (fresh) {
    int in = ::open(m.library.c_str(), O_RDONLY | O_CLOEXEC);
    if (in < 0) return fail(std::string("cannot load: ") + std::strerror(errno));
    struct stat st {};
    copy_fd = memfd_create("troupe-plugin", MFD_CLOEXEC);
    bool copied = copy_fd >= 0 && fstat(in, &st) == 0;
    for (off_t off = 0; copied && off < st.st_size;) {
      auto n = sendfile(copy_fd, in, &off, static_cast<size_t>(st.st_size - off));
      copied = n > 0;
    }
    int err = errno;
    ::close(in);
    if (!copied) {
      if (copy_fd >= 0) ::close(copy_fd);
      return fail(std::string("cannot copy for loading: ") + std::strerror(err));
    }
    load_path = "/proc/self/fd/" + std::to_string(copy_fd);
  }
  void* handle = dlopen(load_path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) {
    if (copy_fd >= 0) ::close(copy_fd);
    return fail(std::string("cannot load: ") + dlerror());
  }
  auto close = [&] {
    dlclose(handle);
    if (copy_fd >= 0) ::close(copy_fd);
  };
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
  const std::string host_abi = std::to_string(TROUPE_ABI_MAJOR) + "." + std::to_string(TROUPE_ABI_MINOR);
  if (api->abi_major != TROUPE_ABI_MAJOR) {
    auto v = api->abi_major;
    close();
    return fail("library speaks ABI " + std::to_string(v) + ".x, this host speaks ABI " + host_abi +
                " (the major must be equal: rebuild the plugin against this troupe)");
  }
  // What the plugin's table holds: an ABI 1.0 table ends after health and has no size (its
  // padding, zero, stands where struct_size is).
  constexpr size_t base = offsetof(troupe_plugin_api, abi_minor);
  constexpr size_t minor_1_1 = offsetof(troupe_plugin_api, reserved) + sizeof(api->reserved);
  size_t size = api->struct_size == 0 ? base : api->struct_size;
  if (api->struct_size != 0 && size < minor_1_1) {
    auto n = api->struct_size;
    close();
    return fail("plugin table says it is " + std::to_string(n) + " bytes, less than the " + std::to_string(minor_1_1) +
                " of an ABI 1.1 table (a table that gives its size has at least those)");
  }
  troupe_plugin_api table{};
  std::memcpy(&table, api, std::min(size, sizeof table));
  if (api->struct_size == 0) table.abi_minor = 0;
  if (table.abi_minor > TROUPE_ABI_MINOR) {
    auto v = table.abi_minor;
    close();
    return fail("library needs ABI 1." + std::to_string(v) + ", this host speaks ABI " + host_abi +
                " (a newer troupe loads it)");
  }
  for (auto* r : table.reserved)
    if (r != nullptr || table.reserved_flags != 0) {
      close();
      return fail("the plugin table's reserved slots are not NULL (built against another header?)");
    }
  api = &table;
  if (api->name == nullptr || m.name != api->name) {
    std::string got = api->name ? api->name : "(null)";
    close();
    return fail("library calls itself '" + got + "', the manifest says '" + m.name + "'");
  }
  const char* missing = !api->create    ? "create"
                        : !api->start   ? "start"
                        : !api->process ? "process"
                        : !api->stop    ? "stop"
                        : !api->destroy ? "destroy"
                                        : nullptr;
  if (missing != nullptr) {
    close();
    return fail(std::string("function '") + missing + "' is NULL in the plugin table");
  }
  return std::shared_ptr<plugin_library>(new plugin_library(handle, table, m.library, copy_fd));
}

plugin_library::~plugin_library() {
  dlclose(handle_);
  if (copy_fd_ >= 0) ::close(copy_fd_);
}

}  // namespace troupe
