// checksum: a sink. Counts frames and bytes per stream and keeps an order-independent
// digest (a sum of per-frame hashes), so replicas and arrival order do not change it; a
// frame seen twice is counted as a duplicate. On stop it writes a summary file.
#include <troupe/plugin.hpp>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <tuple>

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
    if (!seen_.insert({in.stream(), in.seq(), in.part()}).second) {
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
  struct stream_stats {
    uint64_t frames = 0, bytes = 0, duplicates = 0, digest = 0;
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
  std::set<std::tuple<uint64_t, uint64_t, uint32_t>> seen_;
  std::string frames_log_;
};

}  // namespace

TROUPE_PLUGIN("checksum", checksum)
