// checksum: a sink. Counts frames and bytes per stream and keeps an order-independent
// digest (a sum of per-frame hashes), so replicas and arrival order do not change it; a
// frame seen twice is counted as a duplicate. On stop it writes a summary file.
//
// What it remembers of the frames it saw is bounded, so that a sink of a run that never ends
// does not grow: per stream the `recent` most recent frame keys (by stream order), and a
// floor at the highest key let go; a frame at or below the floor counts as seen. Frames of a
// stream reach a sink out of order by far less than that (the runtime's own window of seen
// inputs is 4096 seqs).
#include <troupe/plugin.hpp>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <utility>

namespace {

uint64_t fnv1a64(const uint8_t* p, size_t n) {
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 1099511628211ull;
  return h;
}

uint64_t mix(uint64_t x) {  // splitmix64 finaliser
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

class checksum : public troupe::plugin {
 public:
  explicit checksum(troupe::context& ctx)
      : plugin(ctx),
        output_(ctx.config.get_string("output", "checksum.txt")),
        frames_log_path_(ctx.config.get_string("frames_log", "")) {}

  void process(const troupe::frame_in& in) override {
    uint64_t h = fnv1a64(in.data(), in.size());
    auto& s = streams_[in.stream()];
    if (!s.admit({in.seq(), in.part()})) {
      ++s.duplicates;
      return;
    }
    ++s.frames;
    s.bytes += in.size();
    s.digest += mix(mix(in.stream()) ^ mix(in.seq() * 31 + in.part()) ^ h);
    if (!frames_log_path_.empty()) {
      char line[96];
      std::snprintf(line, sizeof line, "%llu %llu %u %016llx\n", static_cast<unsigned long long>(in.stream()),
                    static_cast<unsigned long long>(in.seq()), in.part(), static_cast<unsigned long long>(h));
      frames_log_ += line;
    }
  }

  void stop() override {
    std::ostringstream out;
    uint64_t frames = 0, bytes = 0, dups = 0;
    for (auto& [id, s] : streams_) {
      char digest[17];
      std::snprintf(digest, sizeof digest, "%016llx", static_cast<unsigned long long>(s.digest));
      out << "stream " << id << " frames " << s.frames << " bytes " << s.bytes << " digest " << digest << " duplicates "
          << s.duplicates << "\n";
      frames += s.frames;
      bytes += s.bytes;
      dups += s.duplicates;
    }
    out << "total frames " << frames << " bytes " << bytes << " duplicates " << dups << "\n";
    write_atomically(output_, out.str());
    if (!frames_log_path_.empty()) write_atomically(frames_log_path_, frames_log_);
  }

 private:
  static constexpr size_t recent = 16384;

  struct stream_stats {
    using key = std::pair<uint64_t, uint32_t>;  // seq, part
    uint64_t frames = 0, bytes = 0, duplicates = 0, digest = 0;
    std::set<key> seen;        // the most recent keys, at most `recent`
    std::optional<key> floor;  // the highest key let go: it and all below count as seen

    // True for a frame not seen before, which is remembered.
    bool admit(key k) {
      if (floor && k <= *floor) return false;
      if (!seen.insert(k).second) return false;
      if (seen.size() > recent) {
        floor = *seen.begin();
        seen.erase(seen.begin());
      }
      return true;
    }
  };

  static void write_atomically(const std::string& path, const std::string& text) {
    auto tmp = path + ".tmp";
    {
      std::ofstream f(tmp, std::ios::trunc);
      f << text;
      f.flush();
      if (!f) throw troupe::fatal_error("checksum: cannot write " + tmp + ": " + std::strerror(errno));
    }
    if (std::rename(tmp.c_str(), path.c_str()) != 0)
      throw troupe::fatal_error("checksum: cannot rename " + tmp + " to " + path + ": " + std::strerror(errno));
  }

  const std::string output_, frames_log_path_;
  std::map<uint64_t, stream_stats> streams_;
  std::string frames_log_;
};

}  // namespace

TROUPE_PLUGIN("checksum", checksum)
