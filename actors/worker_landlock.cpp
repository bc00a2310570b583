#include <troupe/worker_landlock.hpp>

#include <linux/landlock.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>

namespace troupe::landlock {

namespace {

// Rights of later ABI versions than the headers may know.
constexpr uint64_t fs_refer = 1ULL << 13;     // ABI 2
constexpr uint64_t fs_truncate = 1ULL << 14;  // ABI 3

constexpr uint64_t fs_read = LANDLOCK_ACCESS_FS_EXECUTE | LANDLOCK_ACCESS_FS_READ_FILE | LANDLOCK_ACCESS_FS_READ_DIR;
// What a rule on a file (not a directory) may grant.
constexpr uint64_t fs_file_rights =
    LANDLOCK_ACCESS_FS_EXECUTE | LANDLOCK_ACCESS_FS_WRITE_FILE | LANDLOCK_ACCESS_FS_READ_FILE | fs_truncate;

// Every filesystem right this ABI knows: all of them are handled, so what is not granted is
// refused.
uint64_t handled(int abi) {
  uint64_t all = (LANDLOCK_ACCESS_FS_MAKE_SYM << 1) - 1;  // ABI 1: bits 0..12
  if (abi >= 2) all |= fs_refer;
  if (abi >= 3) all |= fs_truncate;
  return all;
}

struct probe {
  int abi = 0;
  std::string why;
};

const probe& probed() {
  static const probe p = [] {
    probe r;
    long v = ::syscall(SYS_landlock_create_ruleset, nullptr, 0, LANDLOCK_CREATE_RULESET_VERSION);
    if (v > 0) {
      r.abi = static_cast<int>(v);
    } else {
      r.why = errno == ENOSYS       ? "the kernel has no Landlock"
              : errno == EOPNOTSUPP ? "Landlock is not enabled in this kernel (boot with lsm=...,landlock)"
                                    : std::string("Landlock: ") + std::strerror(errno);
    }
    return r;
  }();
  return p;
}

}  // namespace

int abi() { return probed().abi; }
const std::string& why_not() { return probed().why; }

std::string describe() {
  if (abi() == 0) return "files not restricted: " + why_not();
  return "files restricted with Landlock (ABI " + std::to_string(abi()) +
         "): each reads the system's libraries and its plugin's folder, writes its scratch directory, and no more "
         "unless granted";
}

const std::vector<std::string>& system_read_paths() {
  static const std::vector<std::string> paths = {
      "/usr",
      "/lib",
      "/lib64",
      "/lib32",
      "/libx32",
      "/etc/ld.so.cache",
      "/etc/ld.so.conf",
      "/etc/ld.so.conf.d",
      "/etc/localtime",
      "/etc/fonts",
      "/dev/null",
      "/dev/zero",
      "/dev/urandom",
      "/dev/random",
      "/sys/devices/system/cpu",
      "/proc/self",  // resolved now: this process's own entry only
  };
  return paths;
}

std::string restrict_self(const grants& g) {
  int v = abi();
  if (v == 0) return why_not();
  landlock_ruleset_attr attr{};
  attr.handled_access_fs = handled(v);
  int rules = static_cast<int>(::syscall(SYS_landlock_create_ruleset, &attr, sizeof attr, 0));
  if (rules < 0) return std::string("Landlock ruleset: ") + std::strerror(errno);
  auto add = [&](const std::string& path, uint64_t access) -> std::string {
    int fd = ::open(path.c_str(), O_PATH | O_CLOEXEC);
    if (fd < 0) return {};  // not there: nothing to grant
    struct stat st {};
    if (::fstat(fd, &st) == 0 && !S_ISDIR(st.st_mode)) access &= fs_file_rights;
    landlock_path_beneath_attr rule{};
    rule.allowed_access = access & handled(v);
    rule.parent_fd = fd;
    long rc = ::syscall(SYS_landlock_add_rule, rules, LANDLOCK_RULE_PATH_BENEATH, &rule, 0);
    int e = errno;
    ::close(fd);
    if (rc != 0) return "Landlock rule for " + path + ": " + std::strerror(e);
    return {};
  };
  std::string why;
  for (auto& p : system_read_paths())
    if (why.empty()) why = add(p, fs_read);
  for (auto& p : g.read)
    if (why.empty()) why = add(p, fs_read);
  for (auto& p : g.write)
    if (why.empty()) why = add(p, handled(v));
  if (why.empty() && ::syscall(SYS_landlock_restrict_self, rules, 0) != 0)
    why = std::string("Landlock: ") + std::strerror(errno);
  ::close(rules);
  return why;
}

std::string temp_dir() {
  const char* tmp = std::getenv("TMPDIR");
  return tmp && *tmp == '/' ? tmp : "/tmp";
}

std::string scratch_dir(int pid) { return temp_dir() + "/troupe-worker-" + std::to_string(pid); }

void remove_orphaned_scratch_dirs() { remove_orphaned_dirs("troupe-worker-"); }

void remove_orphaned_dirs(const std::string& prefix) {
  namespace fs = std::filesystem;
  auto base = fs::path(temp_dir());
  std::error_code ec;
  for (auto it = fs::directory_iterator(base, ec); !ec && it != fs::directory_iterator(); it.increment(ec)) {
    auto name = it->path().filename().string();
    if (name.rfind(prefix, 0) != 0) continue;
    int pid = std::atoi(name.c_str() + prefix.size());
    struct stat st {};
    if (pid <= 0 || ::lstat(it->path().c_str(), &st) != 0 || !S_ISDIR(st.st_mode) || st.st_uid != ::getuid()) continue;
    if (::kill(pid, 0) == 0 || errno != ESRCH) continue;  // that process lives
    std::error_code rm;
    fs::remove_all(it->path(), rm);
  }
}

}  // namespace troupe::landlock
