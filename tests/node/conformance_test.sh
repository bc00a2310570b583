#!/usr/bin/env bash
# `troupe conformance` as a plugin author runs it.
#   conformance_test.sh TROUPE_BINARY PLUGIN_DIR plugin NAME   NAME conforms, in both modes
#   conformance_test.sh TROUPE_BINARY PLUGIN_DIR failures      what does not conform is named
set -uo pipefail
source "$(dirname "$0")/check.sh"
troupe="$1"
plugins="$2"
# Under the sanitizers, a worker's segfault stays a signal rather than a sanitizer report.
export ASAN_OPTIONS="${ASAN_OPTIONS:-}:handle_segv=0:handle_abort=0"
work=$(mktemp -d)
trap 'pkill -9 -f "$work" 2>/dev/null; rm -rf "$work"' EXIT
cd "$work"
conform() { timeout 120 "$troupe" --log-level off conformance --plugin-path "$plugins" "$@" 2>&1; }

if [ "$3" = plugin ]; then
  extra=()
  if [ "$4" = video_decode ] || [ "$4" = audio_decode ]; then  # sources of a file: a clip beside the run's folder
    clips=$(mktemp -d)
    trap 'pkill -9 -f "$work" 2>/dev/null; rm -rf "$work" "$clips"' EXIT
    ffmpeg -hide_banner -loglevel error -nostdin -y -f lavfi -i testsrc2=size=96x64:rate=25:duration=1 \
      -f lavfi -i sine=frequency=440:duration=1 -c:v libx264 -preset veryfast -pix_fmt yuv420p -c:a aac "$clips/clip.mkv"
    extra=(--config "path=$clips/clip.mkv")
  fi
  [ "$4" = avfilter ] && extra=(--config "graph=hflip,hue=s=0")  # it needs a graph
  out=$(conform "$4" "${extra[@]}"); rc=$?
  echo "$out"
  check "exit status 0" [ "$rc" -eq 0 ]
  check "no check failed" contains "$out" " 0 failed"
  check "both modes ran" grep -qE "PASS  isolated: create, start, health and stop succeed" <<<"$out"
  check "both modes compared" contains "$out" "PASS  both modes give the same"
  check "nothing left behind" [ -z "$(ls -A "$work")" ]
  verdict
  exit
fi

out=$(conform faulty --config action=segfault --config on_seq=1); rc=$?
echo "$out"
check "a crash fails conformance" [ "$rc" -eq 1 ]
check "the crash is named with its input" grep -qE "FAIL  isolated: .*input stream 0 seq 1: fatal: worker [0-9]+ killed by SIGSEGV" <<<"$out"
check "the embedded run did not try the crashing inputs" contains "$out" "(2 not tried: they ended the worker)"

out=$(conform faulty --config action=hang --config on_seq=2 --frames 6); rc=$?
check "a hang fails conformance" [ "$rc" -eq 1 ]
check "the hang is named" contains "$out" "seq 2: fatal: no answer within the deadline of 1000 ms"

out=$(conform faulty --config action=reveal --config every=2); rc=$?
check "a plugin that depends on its process fails conformance" [ "$rc" -eq 1 ]
check "the difference is shown" grep -qE "FAIL  both modes give the same statuses, errors and outputs: input stream [0-9]+ seq [0-9]+: .* pid=" <<<"$out"

out=$(conform faulty --config action=fatal --config every=3); rc=$?
check "a fatal error on a known input fails conformance" [ "$rc" -eq 1 ]
check "the fatal error is named" contains "$out" "fatal: faulty: fatal error on stream"

out=$(conform faulty --config fail_start=true); rc=$?
check "a plugin that does not start fails conformance" [ "$rc" -eq 1 ]
check "the failed start is named" contains "$out" "FAIL  isolated: create, start, health and stop succeed: start: fatal: faulty: configured to fail start"

# A manifest that declares outputs its plugin does not give: faulty's library, forwarding
# testsrc's RGB frames, under manifests that promise gray frames, then a metadata key.
lie() {  # lie OUTPUTS: a plugin directory of faulty's library with that outputs line
  mkdir -p "lying/$1" && sed -e "s|^library: .*|library: $plugins/faulty/libtroupe_faulty.so|" \
    "$plugins/faulty/plugin.yaml" > "lying/$1/plugin.yaml" && echo "outputs: $2" >> "lying/$1/plugin.yaml"
}
lie types '{types: [video/gray8]}'
out=$(timeout 120 "$troupe" --log-level off conformance --plugin-path lying/types faulty 2>&1); rc=$?
check "outputs of another type than declared fail conformance" [ "$rc" -eq 1 ]
check "the type is named" contains "$out" "FAIL  isolated: outputs are of the declared types (video/gray8) and carry the declared metadata (none): input stream 0 seq 0: output part 0 has type 'video/rgb24', where the manifest declares video/gray8"
lie keys '{types: [same], gives: [colour]}'
out=$(timeout 120 "$troupe" --log-level off conformance --plugin-path lying/keys faulty 2>&1); rc=$?
check "outputs without a declared key fail conformance" [ "$rc" -eq 1 ]
check "the key is named" contains "$out" "FAIL  embedded: outputs are of the declared types (same) and carry the declared metadata (colour): input stream 0 seq 0: output part 0 has no metadata 'colour' (the manifest's outputs.gives)"
rm -rf lying

out=$(conform no_such_plugin); rc=$?
check "an unknown plugin is a usage error" [ "$rc" -eq 2 ]
check "the unknown plugin is named" contains "$out" "no_such_plugin"

out=$(conform passthrough --config speed=3); rc=$?
check "an unknown config field is a usage error" [ "$rc" -eq 2 ]
check "the field is named" contains "$out" "speed"
verdict
