/* A plugin library that speaks an ABI version the host does not. */
#include <troupe/plugin.h>

static const troupe_plugin_api api = {99u, sizeof(troupe_plugin_api), "wrongabi", 0, 0, 0, 0, 0, 0, 0, 0, {0}};

TROUPE_EXPORT const troupe_plugin_api* troupe_plugin_entry(void) { return &api; }
