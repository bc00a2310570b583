#include "plugin_library.hpp"

#include <dlfcn.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
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
  return std::shared_ptr<plugin_library>(new plugin_library(handle, api, m.library, copy_fd));
}

plugin_library::~plugin_library() {
  dlclose(handle_);
  if (copy_fd_ >= 0) ::close(copy_fd_);
}

}  // namespace troupe
