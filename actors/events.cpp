#include <troupe/events.hpp>

#include <spdlog/spdlog.h>
#include <nlohmann/json.hpp>

#include <cerrno>
#include <chrono>
#include <cstring>

namespace troupe {

const char* to_string(event_kind k) {
  switch (k) {
    case event_kind::pipeline: return "pipeline";
    case event_kind::instance: return "instance";
    case event_kind::restart: return "restart";
    case event_kind::quarantine: return "quarantine";
    case event_kind::dead_letter: return "dead_letter";
    case event_kind::scale: return "scale";
    case event_kind::reload: return "reload";
    case event_kind::node: return "node";
    case event_kind::placement: return "placement";
    case event_kind::pause: return "pause";
    case event_kind::eviction: return "eviction";
  }
  return "?";
}

event_log::~event_log() {
  if (file_ != nullptr) std::fclose(file_);
}

std::string event_log::write_to(const std::string& path) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto* f = std::fopen(path.c_str(), "a");
  if (f == nullptr) return path + ": cannot open for events: " + std::strerror(errno);
  if (file_ != nullptr) std::fclose(file_);
  file_ = f;
  path_ = path;
  write_failed_ = false;
  return {};
}

std::string event_log::to_json(const event& e, const std::string& kind) {
  nlohmann::ordered_json j = {{"seq", e.seq},
                              {"time_ms", e.time_ms},
                              {"kind", kind.empty() ? std::string(to_string(e.kind)) : kind},
                              {"node", e.node},
                              {"pipeline", e.pipeline}};
  if (!e.stage.empty()) j["stage"] = e.stage;
  if (e.replica >= 0) j["replica"] = e.replica;
  if (e.generation > 0) j["generation"] = e.generation;
  if (!e.state.empty()) j["state"] = e.state;
  if (!e.failure.empty()) j["failure"] = e.failure;
  if (!e.detail.empty()) j["detail"] = e.detail;
  return j.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
}

void event_log::add(event e) {
  e.time_ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
                  .count();
  std::lock_guard<std::mutex> lock(mutex_);
  e.seq = next_++;
  if (file_ != nullptr) {
    auto line = to_json(e) + "\n";
    if ((std::fwrite(line.data(), 1, line.size(), file_) != line.size() || std::fflush(file_) != 0) && !write_failed_) {
      write_failed_ = true;  // said once; the ring keeps every event either way
      spdlog::error("{}: cannot append an event: {}", path_, std::strerror(errno));
    }
  }
  ring_.push_back(std::move(e));
  if (ring_.size() > capacity_) ring_.pop_front();
}

std::vector<event> event_log::since(uint64_t after) const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<event> out;
  for (auto& e : ring_)
    if (e.seq > after) out.push_back(e);
  return out;
}

uint64_t event_log::count() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return next_ - 1;
}

}  // namespace troupe
