#include <troupe/manifest.hpp>
#include <troupe/reload_coordinator.hpp>

#include <algorithm>
#include <utility>

namespace troupe {

expected<std::shared_ptr<plan>> next_version(const plan& current, size_t stage, const reload_request& request) {
  const auto& ps = current.stages.at(stage);
  const auto what = "reload of stage '" + ps.spec.name + "'";
  const auto path = request.manifest.empty() ? ps.manifest.path : request.manifest;
  auto m = load_manifest(path);
  if (!m) return make_error(code_of(m.error()).value_or(errc::io_error), what + ": " + describe(m.error()));
  if (m->name != ps.manifest.name)
    return make_error(errc::refused,
                      what + ": " + path + " is plugin '" + m->name + "', the stage runs '" + ps.manifest.name + "'");
  auto entries = ps.spec.config;
  for (auto& [key, value] : request.config) {
    auto it = std::find_if(entries.begin(), entries.end(), [&](auto& e) { return e.key == key; });
    if (it != entries.end())
      it->value = value;
    else
      entries.push_back({key, value, 0});
  }
  auto config = validate_config(*m, entries, what);
  if (!config) return config.error();
  auto next = std::make_shared<plan>(current);
  auto& ns = next->stages[stage];
  ns.manifest = std::move(*m);
  if (auto why = tighten(ns.manifest.resources, ns.spec.resources, ns.spec.resources_given))
    return make_error(errc::invalid_config, what + ": " + *why);
  ns.config = std::move(*config);
  ns.spec.config = std::move(entries);
  if (!ns.spec.deadline_ms) ns.deadline_ms = ns.manifest.resources.deadline_ms;
  return next;
}

void reload_coordinator::begin(reload r) { current_ = std::move(r); }

bool reload_coordinator::serves(const std::function<bool(size_t)>& running) const {
  return current_ && std::all_of(current_->incoming.begin(), current_->incoming.end(), running);
}

reload_coordinator::reload reload_coordinator::end() {
  auto r = std::move(*current_);
  current_.reset();
  return r;
}

void reload_coordinator::wait(reload_request request, caf::response_promise promise) {
  waiting_.push_back({std::move(request), std::move(promise)});
}

std::optional<reload_coordinator::waiting> reload_coordinator::next() {
  if (current_ || waiting_.empty()) return std::nullopt;
  auto w = std::move(waiting_.front());
  waiting_.pop_front();
  return w;
}

std::deque<reload_coordinator::waiting> reload_coordinator::take_waiting() { return std::exchange(waiting_, {}); }

}  // namespace troupe
