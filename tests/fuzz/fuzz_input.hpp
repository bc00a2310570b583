// A fuzz input as the file a loader reads: written to one path per process, under /dev/shm
// when there is one (the loaders take paths, as users give them).
#pragma once

#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>

namespace troupe::fuzz {

inline std::string input_file(const uint8_t* data, size_t size, const char* name) {
  namespace fs = std::filesystem;
  static const std::string path = [&] {
    fs::path dir = fs::exists("/dev/shm") ? fs::path("/dev/shm") : fs::temp_directory_path();
    return (dir / ("troupe-fuzz-" + std::to_string(::getpid()) + "-" + name)).string();
  }();
  std::ofstream(path, std::ios::binary | std::ios::trunc)
      .write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  return path;
}

}  // namespace troupe::fuzz
