// Filesystem permission of isolated workers, with Landlock.
//
// Before it loads its plugin's library, a worker restricts itself (and whatever it starts) to
// the paths it is granted: reading (and mapping code from) the system's libraries and its
// plugin's folder, reading and writing a scratch directory of its own, and what its manifest,
// its stage and its config grant (resources.filesystem, and config fields marked `path: read`
// or `path: write`). Anything else on any filesystem, /proc of other processes included, is
// refused with EACCES. Where the kernel has no Landlock the node says so once, and workers run
// without it.
#pragma once

#include <string>
#include <vector>

namespace troupe::landlock {

/// The Landlock ABI version this kernel offers; 0 if none (why_not says why).
int abi();
const std::string& why_not();
/// One line for the log: whether workers' filesystem access is restricted.
std::string describe();

struct grants {
  std::vector<std::string> read;   // read files and directories, map code
  std::vector<std::string> write;  // and create, write, remove beneath
};

/// What every worker reads whatever it serves: the dynamic loader's files, the system's
/// libraries and data (fonts, time zones), a few devices, its own /proc entry.
const std::vector<std::string>& system_read_paths();

/// Restricts this process to grants (paths that do not exist are left out); empty, or why
/// it could not. Needs no_new_privs set first.
std::string restrict_self(const grants& g);

/// Where temporary directories go: TMPDIR if it is an absolute path, else /tmp.
std::string temp_dir();
/// The scratch directory of the worker with this pid (made by the worker, removed by the node
/// when it has reaped it).
std::string scratch_dir(int pid);
/// Removes the scratch directories of this user's workers that are gone (a node killed with its
/// workers could not).
void remove_orphaned_scratch_dirs();
/// Removes the directories in temp_dir() named PREFIX<pid>... that this user owns and
/// whose process is gone: what processes killed with -9 left behind.
void remove_orphaned_dirs(const std::string& prefix);

}  // namespace troupe::landlock
