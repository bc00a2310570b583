// Helpers shared by the runtime tests: temporary files and directories that clean up.
#pragma once

#include <troupe/error.hpp>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <string>

namespace troupe::test {

/// A fresh directory under the system temp dir, removed with everything in it.
class temp_dir {
 public:
  temp_dir() {
    std::random_device rd;
    path_ = std::filesystem::temp_directory_path() / ("troupe-test-" + std::to_string(rd()) + std::to_string(rd()));
    std::filesystem::create_directories(path_);
  }
  ~temp_dir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;

  const std::filesystem::path& path() const { return path_; }
  /// Writes text to a file relative to the directory; returns its full path.
  std::string write(const std::string& rel, const std::string& text) const {
    auto p = path_ / rel;
    std::filesystem::create_directories(p.parent_path());
    std::ofstream(p) << text;
    return p.string();
  }

 private:
  std::filesystem::path path_;
};

/// Where the example plugins were built.
inline std::string plugin_dir() { return TROUPE_PLUGIN_OUTPUT_DIR; }

}  // namespace troupe::test

/// Asserts an expected holds, printing the error text otherwise.
#define ASSERT_OK(x) ASSERT_TRUE(static_cast<bool>(x)) << troupe::describe((x).error())
