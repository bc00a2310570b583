// The node's end of a worker: its socket, its pidfd and the two shared regions. Private to
// isolated_adapter.cpp and isolated_spawn.cpp.
#pragma once

#include <troupe/isolated_adapter.hpp>

#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>

namespace troupe {

struct isolated_adapter::channel {
  int sock = -1;
  int pidfd = -1;  // readable once the worker has exited
  int region_fd[2] = {-1, -1};
  uint8_t* region[2] = {nullptr, nullptr};
  size_t region_bytes = 0;
  ~channel() {
    if (sock >= 0) close(sock);
    if (pidfd >= 0) close(pidfd);
    for (int i = 0; i < 2; ++i) {
      if (region[i]) munmap(region[i], region_bytes);
      if (region_fd[i] >= 0) close(region_fd[i]);
    }
  }
};

}  // namespace troupe
