#include <troupe/dead_letters.hpp>

#include <cerrno>
#include <cstring>
#include <fstream>

namespace troupe {

namespace {
std::string json_string(const std::string& s) {
  std::string o = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') o += '\\';
    if (static_cast<unsigned char>(c) < 0x20) {
      o += ' ';
      continue;
    }
    o += c;
  }
  return o + "\"";
}
}  // namespace

std::string dead_letter_log::add(dead_letter d) {
  std::lock_guard<std::mutex> lock(mutex_);
  std::string problem;
  if (!path_.empty()) {
    std::ofstream out(path_, std::ios::app);
    out << "{\"stream\":" << d.frame.stream << ",\"seq\":" << d.frame.seq << ",\"part\":" << d.frame.part
        << ",\"stage\":" << json_string(d.stage) << ",\"plugin\":" << json_string(d.plugin)
        << ",\"failure\":" << json_string(d.failure) << ",\"losses\":" << d.losses
        << ",\"error\":" << json_string(d.error) << "}\n";
    out.flush();
    if (!out) problem = path_ + ": cannot append a dead letter: " + std::strerror(errno);
  }
  records_.push_back(std::move(d));
  return problem;
}

std::vector<dead_letter> dead_letter_log::records() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return records_;
}

}  // namespace troupe
