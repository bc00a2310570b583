#!/usr/bin/env bash
# The SDK as a plugin author meets it: install Troupe to a prefix, scaffold a filter, a source
# and a sink with `troupe new-plugin`, build each outside the tree with find_package(Troupe),
# run its conformance test, install it beside the example plugins and run it in a pipeline;
# the pkg-config file, the .deb CPack makes, discovery from a checkout, and the CLI's manners.
# Usage: sdk_test.sh TROUPE_BINARY BUILD_DIR SOURCE_DIR CMAKE CTEST CPACK
set -uo pipefail
source "$(dirname "$0")/check.sh"
troupe="$1" build="$2" src="$3" cmake="$4" ctest="$5" cpack="$6"
unset TROUPE_PLUGIN_PATH
export ASAN_OPTIONS="${ASAN_OPTIONS:-}:detect_leaks=0"
work=$(mktemp -d)
cleanup() {
  pkill -9 -f "$work" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
cd "$work"
prefix="$work/prefix"

out=$("$cmake" --install "$build" --prefix "$prefix" 2>&1); rc=$?
check "cmake --install puts Troupe under a prefix" test $rc -eq 0
for f in bin/troupe include/troupe/plugin.h include/troupe/plugin.hpp lib/cmake/Troupe/TroupeConfig.cmake \
  lib/cmake/Troupe/TroupeConfigVersion.cmake lib/cmake/Troupe/TroupePlugin.cmake share/pkgconfig/troupe-plugin.pc \
  lib/troupe/plugins/testsrc/libtroupe_testsrc.so lib/troupe/plugins/testsrc/plugin.yaml; do
  check "the install holds $f" test -e "$prefix/$f"
done
t="$prefix/bin/troupe"
check "troupe --version names the version and the plugin ABI" grep -qE '^troupe [0-9]+\.[0-9]+\.[0-9]+ \(plugin ABI 1\.1\)$' \
  <<<"$("$t" --version)"

# An installed troupe finds its own plugins from any folder, without TROUPE_PLUGIN_PATH.
out=$("$t" plugins 2>&1)
check "an installed troupe lists the plugins installed beside it" \
  contains "$out" "$prefix/lib/troupe/plugins/testsrc/libtroupe_testsrc.so"

# Scaffold, build against the installed SDK, and check against the contract.
for kind in filter source sink; do
  name="my_$kind"
  out=$("$t" new-plugin "$name" "--$kind" 2>&1); rc=$?
  check "new-plugin --$kind makes a folder" test $rc -eq 0 -a -f "$name/CMakeLists.txt" -a -f "$name/$name.cpp" \
    -a -f "$name/plugin.yaml"
  out=$("$cmake" -S "$name" -B "$name/build" -DCMAKE_PREFIX_PATH="$prefix" 2>&1 && "$cmake" --build "$name/build" 2>&1)
  rc=$?
  check "the $kind plugin builds outside the tree with find_package(Troupe)" test $rc -eq 0
  [ $rc -ne 0 ] && echo "$out" | tail -20
  check "its library lands beside its manifest" test -f "$name/build/plugins/$name/libtroupe_$name.so" -a \
    -f "$name/build/plugins/$name/plugin.yaml"
  out=$(timeout 120 "$ctest" --test-dir "$name/build" -V 2>&1); rc=$?
  check "the $kind plugin's conformance test passes" test $rc -eq 0
  check "its conformance ran under both adapters" grep -qE '^1: [0-9]+ passed, 0 failed$' <<<"$out"
  check "... isolated too" contains "$out" "PASS  isolated: create, start, health and stop succeed"
  [ $rc -ne 0 ] && echo "$out" | grep -E "FAIL|rror" | head -10
  out=$("$cmake" --install "$name/build" --prefix "$prefix" 2>&1); rc=$?
  check "the $kind plugin installs into Troupe's plugin directory" test $rc -eq 0 -a \
    -f "$prefix/lib/troupe/plugins/$name/libtroupe_$name.so"
done

# The installed plugins in a pipeline, run by the installed troupe from another folder.
cat > mine.yaml <<Y
pipeline: mine
stages:
  - {name: src, plugin: my_source, config: {count: 12, bytes: 100}}
  - {name: f, plugin: my_filter, config: {gain: 3}}
  - {name: sink, plugin: my_sink, config: {output: $work/mine.txt}}
edges: ["src -> f -> sink"]
Y
out=$(timeout 60 "$t" run --no-progress mine.yaml 2>&1); rc=$?
check "a pipeline of the three scaffolded plugins runs" test $rc -eq 0
check "its sink saw every frame" grep -qx "frames 12 bytes 1200" mine.txt
out=$(timeout 60 "$t" new-plugin my_filter 2>&1); rc=$?
check "new-plugin refuses a folder that is not empty" test $rc -eq 1
check "... and says so" contains "$out" "my_filter: exists and is not empty"
out=$(timeout 60 "$t" new-plugin Bad-Name 2>&1); rc=$?
check "new-plugin refuses a name that is not a plugin name" test $rc -eq 1 -a ! -e Bad-Name
check "... and says what a name is" contains "$out" "'Bad-Name' is not a plugin name"

# Other build systems: the same headers through pkg-config.
flags=$(PKG_CONFIG_PATH="$prefix/share/pkgconfig" pkg-config --cflags troupe-plugin); rc=$?
check "pkg-config knows troupe-plugin" test $rc -eq 0
# shellcheck disable=SC2086
c++ -std=c++17 -shared -fPIC $flags -o "$work/libpc.so" my_filter/my_filter.cpp 2>&1
check "a plugin builds with pkg-config's flags alone" test -f "$work/libpc.so"
check "pkg-config names the plugin directory" test "$(PKG_CONFIG_PATH="$prefix/share/pkgconfig" \
  pkg-config --variable=plugindir troupe-plugin)" -ef "$prefix/lib/troupe/plugins"

# A .deb of the same install.
out=$(cd "$build" && timeout 240 "$cpack" -G DEB -B "$work/deb" 2>&1); rc=$?
deb=$(ls "$work"/deb/troupe_*.deb 2>/dev/null | head -1)
check "cpack -G DEB makes a package" test $rc -eq 0 -a -n "$deb"
[ -z "$deb" ] && echo "$out" | tail -20
if [ -n "$deb" ]; then
  files=$(dpkg-deb -c "$deb")
  for f in ./usr/bin/troupe ./usr/include/troupe/plugin.hpp ./usr/lib/cmake/Troupe/TroupeConfig.cmake \
    ./usr/lib/troupe/plugins/blur/libtroupe_blur.so ./usr/share/troupe/examples/demo.yaml; do
    check "the package holds $f" contains "$files" "$f"
  done
  check "the package names the libraries it needs" grep -q "libcaf" <<<"$(dpkg-deb -f "$deb" Depends)"
fi

# From a checkout: ./plugins holds manifests without libraries; those beside the binary win.
out=$(cd "$src" && timeout 60 "$troupe" validate examples/demo.yaml 2>&1); rc=$?
check "a checkout's build/troupe validates the demo from the checkout" test $rc -eq 0
check "... and says which manifests it passed over" contains "$out" "was passed over for"

# Usage errors: exit 2, with a guess.
out=$("$troupe" rnu x.yaml 2>&1); rc=$?
check "a mistyped command exits 2" test $rc -eq 2
check "... and suggests the command" contains "$out" "unknown command 'rnu'; did you mean 'run'?"
out=$("$troupe" run --no-progres x.yaml 2>&1); rc=$?
check "a mistyped option exits 2 and suggests the option" test $rc -eq 2
check "... by name" contains "$out" "did you mean '--no-progress'?"
"$troupe" run >/dev/null 2>&1; rc=$?
check "a missing argument exits 2" test $rc -eq 2
verdict
