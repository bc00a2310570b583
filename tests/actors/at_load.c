/* A plugin library that does harm as it is loaded, in its constructor, before any function of
   the plugin is called: it aborts, or opens a TCP listener on 127.0.0.1, as the environment
   variable TROUPE_TEST_AT_LOAD says. A node running it isolated must never load it itself. */
#include <troupe/plugin.h>

#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

__attribute__((constructor)) static void at_load(void) {
  const char* what = getenv("TROUPE_TEST_AT_LOAD");
  if (what == NULL) return;
  if (strcmp(what, "abort") == 0) abort();
  if (strcmp(what, "listen") == 0) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd >= 0 && bind(fd, (struct sockaddr*)&a, sizeof a) == 0) listen(fd, 1);
  }
}

/* Loads cleanly without TROUPE_TEST_AT_LOAD, and is then refused for its empty table. */
static const troupe_plugin_api api = {
    TROUPE_ABI_MAJOR, sizeof(troupe_plugin_api), "atload", 0, 0, 0, 0, 0, 0, TROUPE_ABI_MINOR, 0, {0}};

TROUPE_EXPORT const troupe_plugin_api* troupe_plugin_entry(void) { return &api; }
