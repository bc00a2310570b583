/* Plugin tables of other ABI versions than the host's, one per build (-DVARIANT=...):
 *   ABI_1_0      a plugin built against ABI 1.0: the table and host table as they were then
 *                (no struct_size, no minor); it forwards every frame. A 1.1 host runs it.
 *   ABI_NEWER    ABI 1.99: a newer minor than the host's, refused.
 *   ABI_SHORT    a table that says it is 12 bytes: refused.
 *   ABI_RESERVED a reserved slot that is not NULL: refused. */
#include <troupe/plugin.h>

#include <stddef.h>
#include <stdint.h>

#define ABI_1_0 1
#define ABI_NEWER 2
#define ABI_SHORT 3
#define ABI_RESERVED 4

#if VARIANT == ABI_1_0
/* ABI 1.0, as its header declared it. */
typedef struct host_1_0 {
  uint32_t abi_version;
  void* ctx;
  uint8_t* (*alloc)(void* ctx, size_t size);
  troupe_status (*emit)(void* ctx, const troupe_output* out);
  void (*log)(void* ctx, troupe_log_level level, const char* message);
  void (*set_error)(void* ctx, const char* message);
} host_1_0;

typedef struct api_1_0 {
  uint32_t abi_version;
  const char* name;
  void* (*create)(const host_1_0* host, const troupe_kv* config, uint32_t config_count);
  troupe_status (*start)(void* self);
  troupe_status (*process)(void* self, const troupe_frame_view* in);
  troupe_status (*stop)(void* self);
  void (*destroy)(void* self);
  troupe_status (*health)(void* self);
} api_1_0;

static void* create(const host_1_0* host, const troupe_kv* config, uint32_t n) {
  (void)config;
  (void)n;
  return (void*)host; /* the instance is its host table: all this plugin needs */
}
static troupe_status ok(void* self) {
  (void)self;
  return TROUPE_OK;
}
static troupe_status process(void* self, const troupe_frame_view* in) {
  const host_1_0* host = (const host_1_0*)self;
  if (in == NULL) return TROUPE_END;
  troupe_output out = {0, 0, in->timestamp_ns, NULL, in->meta, in->meta_count, in->data, in->size};
  return host->emit(host->ctx, &out);
}
static void destroy(void* self) { (void)self; }

static const api_1_0 api = {1u, "abi_old", create, ok, process, ok, destroy, ok};
TROUPE_EXPORT const api_1_0* troupe_plugin_entry(void) { return &api; }

#else
#if VARIANT == ABI_NEWER
#define NAME "abi_newer"
#define SIZE sizeof(troupe_plugin_api)
#define MINOR 99u
#define RESERVED 0
#elif VARIANT == ABI_SHORT
#define NAME "abi_short"
#define SIZE 12u
#define MINOR TROUPE_ABI_MINOR
#define RESERVED 0
#elif VARIANT == ABI_RESERVED
#define NAME "abi_reserved"
#define SIZE sizeof(troupe_plugin_api)
#define MINOR TROUPE_ABI_MINOR
#define RESERVED (void*)&api
#endif

static troupe_instance* create(const troupe_host* host, const troupe_kv* config, uint32_t n) {
  (void)host;
  (void)config;
  (void)n;
  return NULL;
}
static troupe_status call(troupe_instance* self) {
  (void)self;
  return TROUPE_OK;
}
static troupe_status process(troupe_instance* self, const troupe_frame_view* in) {
  (void)self;
  (void)in;
  return TROUPE_OK;
}
static void destroy(troupe_instance* self) { (void)self; }

static const troupe_plugin_api api = {TROUPE_ABI_MAJOR, SIZE, NAME,  create, call,      process, call,
                                      destroy,          call, MINOR, 0,      {RESERVED}};
TROUPE_EXPORT const troupe_plugin_api* troupe_plugin_entry(void) { return &api; }
#endif
