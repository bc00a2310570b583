/*
 * The Troupe plugin contract: a small, versioned C ABI.
 *
 * A plugin is a shared library that exports one symbol, troupe_plugin_entry, returning a
 * table of functions (troupe_plugin_api). The host calls them on one thread at a time per
 * instance; a plugin never learns whether it runs in the node process or in a worker.
 *
 * Lifecycle: create -> start -> process* -> stop -> destroy. create and start may fail
 * (start_failed); a process call that returns TROUPE_FATAL, crashes, or runs past its
 * deadline makes the instance `lost`; stop may fail (teardown_failed). destroy always runs
 * after a successful create unless the instance was lost in a call that never returned.
 *
 * Memory: everything the host passes in (frame views, config, host table) is owned by the
 * host and valid only during the call that received it, except the host table, which is
 * valid from create until destroy returns. Error messages go through host->set_error, which
 * copies them, so no memory ever has to be freed across the boundary.
 *
 * No C++ exception may cross this boundary, either way: troupe/plugin.hpp catches and
 * converts a plugin's; the host's callbacks never throw and report failures as status.
 *
 * Versions: ABI MAJOR.MINOR. A host loads a plugin whose major equals its own and whose minor
 * is not above its own. A minor adds fields at the end of a table, never moves one: each
 * table says its own size (struct_size) and reads only what the other side's size covers. A
 * table of ABI 1.0 has no struct_size (its padding, zero, stands there) and no minor; a 1.1
 * host loads it as 1.0. Reserved slots are NULL (zero) and ignored.
 */
#ifndef TROUPE_PLUGIN_H
#define TROUPE_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The major is bumped on every incompatible change of the structures or functions below,
 * the minor on each compatible addition. TROUPE_ABI_VERSION is the major, which manifests'
 * `abi` field names. */
#define TROUPE_ABI_MAJOR 1u
#define TROUPE_ABI_MINOR 1u
#define TROUPE_ABI_VERSION TROUPE_ABI_MAJOR
/* Reserved slots at the end of each table, for additions within a major. */
#define TROUPE_RESERVED_SLOTS 8

/* The one symbol a plugin library exports. */
#define TROUPE_ENTRY_SYMBOL "troupe_plugin_entry"

#if defined(__GNUC__)
#define TROUPE_EXPORT __attribute__((visibility("default")))
#else
#define TROUPE_EXPORT
#endif

typedef enum troupe_status {
  TROUPE_OK = 0,
  /* This call failed; the instance is fine. For process: the frame is counted as failed. */
  TROUPE_ERROR = 1,
  /* The instance cannot go on: the host treats it as lost and restarts it. */
  TROUPE_FATAL = 2,
  /* Only from a source's process(self, NULL): the source has nothing more to produce. */
  TROUPE_END = 3
} troupe_status;

typedef enum troupe_log_level {
  TROUPE_LOG_TRACE = 0,
  TROUPE_LOG_DEBUG = 1,
  TROUPE_LOG_INFO = 2,
  TROUPE_LOG_WARN = 3,
  TROUPE_LOG_ERROR = 4
} troupe_log_level;

/* An instance of a plugin, as its create made it. Opaque to the host: the host only hands it
 * back to the plugin's functions.
 * OWNERSHIP: the plugin's, from create until destroy, which frees it. */
typedef struct troupe_instance troupe_instance;

/* A key/value pair of NUL-terminated strings (config entries, frame metadata).
 * OWNERSHIP: the side that passes it; valid during the call that receives it. */
typedef struct troupe_kv {
  const char* key;
  const char* value;
} troupe_kv;

/* A read-only view of one input frame.
 * OWNERSHIP: the host's; valid only during the process call. The plugin keeps no pointer into
 * it, and may emit its payload (or a part of it) during that call without a copy. */
typedef struct troupe_frame_view {
  uint64_t stream;       /* stream id, chosen by the source */
  uint64_t seq;          /* sequence number within the stream */
  uint32_t part;         /* index among the outputs of the input this frame came from */
  uint64_t generation;   /* generation of the instance that emitted this frame */
  int64_t timestamp_ns;  /* presentation time chosen by the source */
  const char* type;      /* type tag, e.g. "video/rgb24" */
  const troupe_kv* meta; /* small metadata map */
  uint32_t meta_count;
  const uint8_t* data; /* payload bytes; never written */
  size_t size;
} troupe_frame_view;

/*
 * One output. For a stage with inputs, stream and seq are inherited from the input being
 * processed and the fields here are ignored; a source sets them. So is the input's metadata:
 * meta lays pairs over it (a key replaced or added; a key with an empty value removed), and
 * meta_count 0 passes it on as it came. If data points into the
 * input's payload, or into a buffer returned by host->alloc during this call, no payload
 * byte is copied; otherwise the host copies size bytes from data.
 * OWNERSHIP: the plugin's; the host copies what it keeps during emit, so everything it points
 * to may be freed once emit returns.
 */
typedef struct troupe_output {
  uint64_t stream;
  uint64_t seq;
  int64_t timestamp_ns;
  const char* type; /* NULL: the input's type (a source must set it) */
  const troupe_kv* meta;
  uint32_t meta_count;
  const uint8_t* data;
  size_t size;
} troupe_output;

/* The host's side of the contract. Every callback is safe to call from the plugin's thread
 * during the plugin's calls, never throws, and reports a failure by its result.
 * OWNERSHIP: the host's; valid from create until destroy returns. */
typedef struct troupe_host {
  uint32_t abi_major;   /* TROUPE_ABI_MAJOR of the host */
  uint32_t struct_size; /* sizeof(troupe_host) of the host; 0 from a host of ABI 1.0 */
  void* ctx;
  /* A writable payload buffer of size bytes, owned by the host; emit it to pass it on
   * without a copy. Valid until the current call returns. NULL if out of memory. */
  uint8_t* (*alloc)(void* ctx, size_t size);
  /* Hands one output to the next stage. Only valid during process. */
  troupe_status (*emit)(void* ctx, const troupe_output* out);
  /* Logs a line tagged with node, stage, instance and generation. */
  void (*log)(void* ctx, troupe_log_level level, const char* message);
  /* Sets the reason for the failing call's status; the host copies the message. */
  void (*set_error)(void* ctx, const char* message);
  /* ABI 1.1 and later (struct_size covers them). */
  uint32_t abi_minor; /* TROUPE_ABI_MINOR of the host */
  uint32_t reserved_flags;
  void* reserved[TROUPE_RESERVED_SLOTS];
} troupe_host;

/* The plugin's side of the contract: what troupe_plugin_entry returns.
 * OWNERSHIP: the plugin's; static, valid while the library is loaded. */
typedef struct troupe_plugin_api {
  uint32_t abi_major;   /* must equal TROUPE_ABI_MAJOR of the host */
  uint32_t struct_size; /* sizeof(troupe_plugin_api) of the plugin (0: an ABI 1.0 table) */
  const char* name;     /* must equal the manifest's name */
  /* Makes one instance with a validated config (all fields present, defaults filled).
   * Returns NULL on failure, after host->set_error. */
  troupe_instance* (*create)(const troupe_host* host, const troupe_kv* config, uint32_t config_count);
  troupe_status (*start)(troupe_instance* self);
  /* in == NULL asks a source for its next frames (zero or more emits, or TROUPE_END). */
  troupe_status (*process)(troupe_instance* self, const troupe_frame_view* in);
  troupe_status (*stop)(troupe_instance* self);
  void (*destroy)(troupe_instance* self);
  /* Optional (may be NULL): TROUPE_OK while the instance is healthy. */
  troupe_status (*health)(troupe_instance* self);
  /* ABI 1.1 and later (struct_size covers them). */
  uint32_t abi_minor; /* must not be above TROUPE_ABI_MINOR of the host */
  uint32_t reserved_flags;
  void* reserved[TROUPE_RESERVED_SLOTS];
} troupe_plugin_api;

typedef const troupe_plugin_api* (*troupe_plugin_entry_fn)(void);

#ifdef __cplusplus
}
#endif

#endif /* TROUPE_PLUGIN_H */
