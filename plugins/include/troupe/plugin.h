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
 * No C++ exception may cross this boundary; troupe/plugin.hpp catches and converts them.
 */
#ifndef TROUPE_PLUGIN_H
#define TROUPE_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Bumped on every incompatible change of the structures or functions below. */
#define TROUPE_ABI_VERSION 1u

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

/* A key/value pair of NUL-terminated strings (config entries, frame metadata). */
typedef struct troupe_kv {
  const char* key;
  const char* value;
} troupe_kv;

/* A read-only view of one input frame, valid only during the process call. */
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
 * processed and the fields here are ignored; a source sets them. If data points into the
 * input's payload, or into a buffer returned by host->alloc during this call, no payload
 * byte is copied; otherwise the host copies size bytes from data.
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

/* The host's side of the contract, valid from create until destroy returns. */
typedef struct troupe_host {
  uint32_t abi_version;
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
} troupe_host;

typedef struct troupe_plugin_api {
  uint32_t abi_version; /* must equal TROUPE_ABI_VERSION of the host */
  const char* name;     /* must equal the manifest's name */
  /* Makes one instance with a validated config (all fields present, defaults filled).
   * Returns NULL on failure, after host->set_error. */
  void* (*create)(const troupe_host* host, const troupe_kv* config, uint32_t config_count);
  troupe_status (*start)(void* self);
  /* in == NULL asks a source for its next frames (zero or more emits, or TROUPE_END). */
  troupe_status (*process)(void* self, const troupe_frame_view* in);
  troupe_status (*stop)(void* self);
  void (*destroy)(void* self);
  /* Optional (may be NULL): TROUPE_OK while the instance is healthy. */
  troupe_status (*health)(void* self);
} troupe_plugin_api;

typedef const troupe_plugin_api* (*troupe_plugin_entry_fn)(void);

#ifdef __cplusplus
}
#endif

#endif /* TROUPE_PLUGIN_H */
