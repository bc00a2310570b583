/* A shared library that is not a Troupe plugin: it lacks troupe_plugin_entry. */
int troupe_not_a_plugin(void) { return 42; }
