#!/usr/bin/env bash
# Real media across two `troupe node` processes on 127.0.0.1: a clip decoded on n1, blurred on
# both nodes (round robin: frames overtake each other across the data links), encoded on n2.
# The file has every frame, in presentation order, as the same pipeline run in one process.
# Usage: media_cluster_test.sh TROUPE_BINARY PLUGIN_DIR
set -uo pipefail
source "$(dirname "$0")/check.sh"
troupe="$1"
export TROUPE_PLUGIN_PATH="$2"
source "$(dirname "$0")/nodes.sh"
free_ports 24
start_etcd 1
admin="--node 127.0.0.1:${port[9]} --token secret"
status() { "$troupe" status $admin 2>&1; }
start_node n1 1
start_node n2 2
check "the two nodes see each other" wait_for 10 bash -c "\"$troupe\" status $admin | grep -qE '^n2 +up '"

ffmpeg -hide_banner -loglevel error -nostdin -y -f lavfi -i testsrc2=size=320x240:rate=25:duration=4 \
  -c:v libx264 -preset veryfast -g 25 -pix_fmt yuv420p clip.mp4
cat > across.yaml <<Y
pipeline: across
window: 8
stages:
  - {name: decode, plugin: video_decode, config: {path: $work/clip.mp4}}
  - {name: blur, plugin: blur, config: {radius: 2}, replicas: 1, routing: round_robin, nodes: [n1, n2]}
  - {name: encode, plugin: video_encode, node: n2, config: {output: $work/across.mkv}}
edges: ["decode -> blur -> encode"]
Y
out=$("$troupe" deploy across.yaml $admin 2>&1)
echo "$out"
check "deploy places the pipeline on both nodes" contains "$out" "pipeline 'across' deployed"
check "the pipeline finishes" wait_for 60 bash -c "\"$troupe\" status $admin | grep -qE '^across +finished '"
s=$(status)
echo "$s"
check "decode ran on n1, encode on n2" bash -c \
  "grep -qE '^across +decode +n1 ' <<<'$s' && grep -qE '^across +encode +n2 ' <<<'$s'"
check "blur ran on both nodes, each took frames" bash -c \
  "grep -qE '^across +blur +n1 +embedded +[a-z]+ +1 +[1-9]' <<<'$s' && grep -qE '^across +blur +n2 +embedded +[a-z]+ +1 +[1-9]' <<<'$s'"
check "the encoder wrote the file" wait_for 20 test -s across.mkv
frames() { ffprobe -v error -count_frames -select_streams v:0 -show_entries stream=nb_read_frames -of csv=p=0 "$1"; }
times() { ffprobe -v error -select_streams v:0 -show_entries frame=pts_time -of csv=p=0 "$1" | grep -v '^$' | cut -d, -f1; }
check "it has all 100 frames" [ "$(frames across.mkv)" = 100 ]
increasing() { awk 'NR > 1 && $1 + 0 <= p + 0 {bad = 1} {p = $1} END {exit bad}'; }
check "in presentation order" increasing < <(times across.mkv)
sed "s/pipeline: across/pipeline: single/; s#across.mkv#single.mkv#; s/, nodes: \[n1, n2\]//; s/, node: n2//" \
  across.yaml > single.yaml
timeout 60 "$troupe" run --no-progress single.yaml > single.out 2>&1
hashes() { ffmpeg -hide_banner -loglevel error -nostdin -i "$1" -f framemd5 -pix_fmt rgb24 - | grep -v '^#' | cut -d, -f2-; }
check "every frame equals the one-process run's (FFV1)" [ "$(hashes across.mkv)" = "$(hashes single.mkv)" ]
verdict
