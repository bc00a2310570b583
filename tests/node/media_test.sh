#!/usr/bin/env bash
# Real media as a user runs it: clips made with the ffmpeg tool from its own test sources,
# decoded, processed and encoded by `troupe run`, and the output checked with ffprobe.
# Usage: media_test.sh TROUPE_BINARY PLUGIN_DIR
set -uo pipefail
source "$(dirname "$0")/check.sh"
troupe="$1"
export TROUPE_PLUGIN_PATH="$2"
export ASAN_OPTIONS="${ASAN_OPTIONS:-}:handle_segv=0:handle_abort=0"
work=$(mktemp -d)
trap 'pkill -9 -f "$work" 2>/dev/null; rm -rf "$work"' EXIT
cd "$work"
ff() { ffmpeg -hide_banner -loglevel error -nostdin -y "$@"; }
run() { timeout 120 "$troupe" run --no-progress "$@"; }
frames() { ffprobe -v error -count_frames -select_streams v:0 -show_entries stream=nb_read_frames -of csv=p=0 "$1"; }
duration() { ffprobe -v error -show_entries format=duration -of csv=p=0 "$1"; }
# Presentation times of the decoded frames, in seconds, one per line.
times() { ffprobe -v error -select_streams v:0 -show_entries frame=pts_time -of csv=p=0 "$1" | grep -v '^$' | cut -d, -f1; }
# One hash per frame as rgb24, in presentation order.
hashes() { ff -i "$1" -f framemd5 -pix_fmt rgb24 - | grep -v '^#' | awk -F, '{print $6}'; }
increasing() { awk 'NR > 1 && $1 + 0 <= p + 0 {bad = 1} {p = $1} END {exit bad}'; }
json_field() {  # json_field FILE STAGE FIELD: the field of the stage's first instance in a --report
  python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(int(next(i for i in r["instances"] if i["stage"]==sys.argv[2])[sys.argv[3]]))' "$@"
}

# A lossless RGB clip (FFV1, 2 s at 25 fps) and an H.264 one with audio (4 s).
ff -f lavfi -i testsrc2=size=320x240:rate=25:duration=2 -c:v ffv1 -pix_fmt bgr0 in.mkv
ff -f lavfi -i testsrc2=size=320x240:rate=25:duration=4 -f lavfi -i sine=frequency=440:duration=4 \
  -c:v libx264 -preset veryfast -g 25 -pix_fmt yuv420p -c:a aac clip.mp4

# Decode -> encode, FFV1 to FFV1: every frame, its time and its pixels come through.
cat > roundtrip.yaml <<Y
pipeline: roundtrip
stages:
  - {name: decode, plugin: video_decode, config: {path: $work/in.mkv}}
  - {name: encode, plugin: video_encode, config: {output: $work/out.mkv, codec: ffv1}}
edges: ["decode -> encode"]
Y
out=$(run roundtrip.yaml 2>&1); rc=$?
check "the round trip finishes" [ "$rc" -eq 0 ]
check "the output has the input's 50 frames" [ "$(frames out.mkv)" = 50 ]
check "the output keeps every presentation time" [ "$(times out.mkv)" = "$(times in.mkv)" ]
check "the output keeps the duration" [ "$(duration out.mkv)" = "$(duration in.mkv)" ]
check "FFV1 is lossless: every frame decodes to the input's pixels" [ "$(hashes out.mkv)" = "$(hashes in.mkv)" ]
check "nothing is left as .part" [ ! -e out.mkv.part ]

# decode -> blur on 2 replicas (round robin: frames overtake each other) -> watermark -> H.264.
cat > transcode.yaml <<Y
pipeline: transcode
window: 8  # frames in flight per receiver: replicas can overtake each other by less than the encoder holds
stages:
  - {name: decode, plugin: video_decode, config: {path: $work/clip.mp4}}
  - {name: blur, plugin: blur, config: {radius: 2}, replicas: 2, routing: round_robin}
  - {name: watermark, plugin: watermark}
  - {name: encode, plugin: video_encode, config: {output: $work/out.mp4, codec: h264, preset: ultrafast}}
edges: ["decode -> blur -> watermark -> encode"]
Y
out=$(run --report transcode.json transcode.yaml 2>&1); rc=$?
check "the transcode finishes" [ "$rc" -eq 0 ]
check "it is H.264 in MP4" [ "$(ffprobe -v error -show_entries stream=codec_name -of csv=p=0 out.mp4)" = h264 ]
check "all 100 frames are encoded" [ "$(frames out.mp4)" = 100 ]
check "in presentation order, though two replicas handled them" increasing < <(times out.mp4)
check "both replicas took frames" [ "$(grep -cE '^blur(#1)? +blur +embedded +stopped +1 +[1-9]' <<<"$out")" = 2 ]
check "no frame was refused as late" [ "$(json_field transcode.json encode fail)" = 0 ]

# Audio: audio_decode gives the samples ffmpeg decodes, and video_encode muxes them (AAC)
# beside the video, both in time order though audio decodes far faster.
cat > audio.yaml <<Y
pipeline: audio
stages:
  - {name: audio, plugin: audio_decode, config: {path: $work/clip.mp4, format: s16}}
  - {name: sink, plugin: checksum, config: {output: $work/audio.txt}}
edges: ["audio -> sink"]
Y
out=$(run audio.yaml 2>&1); rc=$?
check "audio decoding finishes" [ "$rc" -eq 0 ]
pcm=$(ff -i clip.mp4 -map 0:a -f s16le - | wc -c)
check "it gives as many bytes of s16 as ffmpeg decodes ($pcm)" grep -q "^total frames [0-9]* bytes $pcm " audio.txt
check "in 20 ms blocks of 882 samples (44.1 kHz)" grep -q "^total frames $(((pcm / 2 + 881) / 882)) " audio.txt
# The encoder's window holds the whole clip (100 frames, 200 blocks): on a loaded machine one
# decoder may run far ahead of the other, and what comes after later frames were encoded is
# refused as late.
cat > muxed.yaml <<Y
pipeline: muxed
window: 8
stages:
  - {name: video, plugin: video_decode, config: {path: $work/clip.mp4}}
  - {name: audio, plugin: audio_decode, config: {path: $work/clip.mp4}}
  - {name: blur, plugin: blur, config: {radius: 2}, replicas: 2, routing: round_robin}
  - {name: encode, plugin: video_encode, config: {output: $work/muxed.mkv, audio: true, window: 512}}
edges: ["video -> blur -> encode", "audio -> encode"]
Y
out=$(run --report muxed.json muxed.yaml 2>&1); rc=$?
check "video and audio into one file finish" [ "$rc" -eq 0 ]
check "the file has an FFV1 and an AAC stream" [ "$(ffprobe -v error -show_entries stream=codec_name -of csv=p=0 \
  muxed.mkv | tr '\n' ' ')" = "ffv1 aac " ]
check "all 100 video frames, in order" [ "$(frames muxed.mkv)" = 100 ]
check "no frame or block was refused" [ "$(json_field muxed.json encode fail)" = 0 ]
adur=$(ffprobe -v error -select_streams a:0 -show_entries stream=duration -of csv=p=0 muxed.mkv)
[ "$adur" = N/A ] && adur=$(ffprobe -v error -select_streams a:0 -show_entries packet=pts_time -of csv=p=0 muxed.mkv | tail -1)
check "the audio lasts the clip's 4 s (${adur})" python3 -c "import sys; sys.exit(abs(float('$adur') - 4.0) > 0.1)"
out=$(sed 's/, audio: true//' muxed.yaml > unmuxed.yaml; run --report unmuxed.json unmuxed.yaml 2>&1)
check "audio reaching an encoder without audio: true is refused, saying so" contains "$out" "set audio: true to mux it"

# scale and convert: yuv420p frames resized (aspect kept) and turned to gray.
cat > scaled.yaml <<Y
pipeline: scaled
stages:
  - {name: decode, plugin: video_decode, config: {path: $work/clip.mp4, format: yuv420p}}
  - {name: scale, plugin: scale, config: {width: 160}}
  - {name: gray, plugin: convert, config: {format: gray8}}
  - {name: encode, plugin: video_encode, config: {output: $work/scaled.mkv}}
edges: ["decode -> scale -> gray -> encode"]
Y
out=$(run scaled.yaml 2>&1); rc=$?
check "scale and convert finish" [ "$rc" -eq 0 ]
check "the frames are 160x120 gray, all 100" [ "$(ffprobe -v error -count_frames -show_entries \
  stream=width,height,pix_fmt,nb_read_frames -of csv=p=0 scaled.mkv)" = "160,120,gray,100" ]

# avfilter runs an FFmpeg filter graph: flipped twice, every pixel is back (FFV1 is lossless);
# overlay_text draws text at the bottom and leaves the top of the frame alone.
cat > filtered.yaml <<Y
pipeline: filtered
stages:
  - {name: decode, plugin: video_decode, config: {path: $work/in.mkv}}
  - {name: flips, plugin: avfilter, config: {graph: "vflip,hflip,vflip,hflip"}}
  - {name: encode, plugin: video_encode, config: {output: $work/flipped.mkv}}
edges: ["decode -> flips -> encode"]
Y
out=$(run filtered.yaml 2>&1); rc=$?
check "a filter graph runs" [ "$rc" -eq 0 ]
check "flipped four times, every frame is the input's" [ "$(hashes flipped.mkv)" = "$(hashes in.mkv)" ]
sed 's/vflip,hflip,vflip,hflip/hflip/; s/flipped.mkv/mirrored.mkv/' filtered.yaml > mirrored.yaml
out=$(run mirrored.yaml 2>&1)
check "flipped once, no frame is" [ -z "$(comm -12 <(hashes mirrored.mkv | sort) <(hashes in.mkv | sort))" ]
sed 's/graph: "vflip,hflip,vflip,hflip"/graph: "nosuchfilter=1"/' filtered.yaml > badgraph.yaml
out=$(run badgraph.yaml 2>&1)
check "an unknown filter fails the start, named" contains "$out" "No such filter: 'nosuchfilter'"
cat > text.yaml <<Y
pipeline: text
stages:
  - {name: decode, plugin: video_decode, config: {path: $work/in.mkv}}
  - {name: text, plugin: overlay_text, config: {text: "Troupe 100%: it's real", y: "h-th-8", size: 24}}
  - {name: encode, plugin: video_encode, config: {output: $work/text.mkv}}
edges: ["decode -> text -> encode"]
Y
out=$(run text.yaml 2>&1); rc=$?
check "overlay_text runs" [ "$rc" -eq 0 ]
top() { ff -i "$1" -vf crop=320:160:0:0 -f framemd5 -pix_fmt rgb24 - | grep -v '^#' | awk -F, '{print $6}'; }
check "the top of every frame is untouched" [ "$(top text.mkv)" = "$(top in.mkv)" ]
check "the text changed every frame" [ -z "$(comm -12 <(hashes text.mkv | sort) <(hashes in.mkv | sort))" ]
sed 's#text: "Troupe 100%: it.s real"#font: /no/such/font.ttf#' text.yaml > nofont.yaml
out=$(run nofont.yaml 2>&1)
check "a missing font is named" contains "$out" "overlay_text: font '/no/such/font.ttf' is not a file"

# Frames from several streams go to one file in time order (two sources of one clip each).
cat > streams.yaml <<Y
pipeline: streams
stages:
  - {name: a, plugin: video_decode, config: {path: $work/in.mkv, stream: 0, end_s: 1}}
  - {name: b, plugin: video_decode, config: {path: $work/in.mkv, stream: 1, start_s: 1}}
  - {name: encode, plugin: video_encode, config: {output: $work/streams.mkv}}
edges: ["a -> encode", "b -> encode"]
Y
out=$(run streams.yaml 2>&1); rc=$?
check "two streams into one file finish" [ "$rc" -eq 0 ]
check "the file holds both streams' frames" [ "$(frames streams.mkv)" = 50 ]
check "in time order" increasing < <(times streams.mkv)

# A damaged file (bytes flipped in its middle, its last fifth cut off): frame errors are
# counted, the run finishes, and what could be decoded is a playable file.
ff -i clip.mp4 -c copy -an clip.mkv
python3 - <<'P'
import random
d = bytearray(open("clip.mkv", "rb").read())
random.seed(7)
n = len(d)
for _ in range(200):
    d[random.randrange(n * 3 // 10, n * 7 // 10)] ^= 0xFF
open("damaged.mkv", "wb").write(d[: n * 8 // 10])
P
sed "s#$work/in.mkv#$work/damaged.mkv#; s#$work/out.mkv#$work/repaired.mkv#" roundtrip.yaml > damaged.yaml
out=$(run --report damaged.json damaged.yaml 2>&1); rc=$?
check "a damaged input still finishes the run" [ "$rc" -eq 0 ]
check "the damage is counted as frame errors" [ "$(json_field damaged.json decode fail)" -gt 0 ]
check "the decoder was never lost" [ "$(json_field damaged.json decode restarts)" = 0 ]
n=$(frames repaired.mkv)
check "what was decoded is a playable file ($n frames)" [ "${n:-0}" -gt 20 ]

# A file that is not video is refused at start, naming the file.
echo "not a video" > text.mkv
sed "s#$work/in.mkv#$work/text.mkv#" roundtrip.yaml > text.yaml
out=$(run --report text.json text.yaml 2>&1); rc=$?
check "a file that is not video fails the run" [ "$rc" -ne 0 ]
check "the error names the file" contains "$out" "video_decode: cannot open '$work/text.mkv'"

# kill -9 of an isolated decoder mid-run: its next generation decodes again from the start;
# what the encoder already has is recognised as seen, so the file has every frame once. A
# window of 8 frames keeps the decoder at the blur's pace, so that it is still running when it
# is killed (with the default window it could decode all 300 frames in a fraction of a second).
ff -f lavfi -i testsrc2=size=640x360:rate=25:duration=12 -c:v libx264 -preset veryfast -pix_fmt yuv420p long.mp4
cat > killed.yaml <<Y
pipeline: killed
window: 8
stages:
  - {name: decode, plugin: video_decode, mode: isolated, config: {path: $work/long.mp4, threads: 1}}
  - {name: blur, plugin: blur, config: {radius: 6}}
  - {name: encode, plugin: video_encode, config: {output: $work/killed.mkv, window: 256}}
edges: ["decode -> blur -> encode"]
Y
timeout 120 "$troupe" run --no-progress --report killed.json killed.yaml > killed.log 2>&1 &
runner=$!
worker=""
for _ in $(seq 1 200); do
  node=$(pgrep -P "$runner" | head -1)
  [ -n "$node" ] && worker=$(pgrep -P "$node" -f "troupe.* worker" | head -1)
  [ -n "$worker" ] && grep -q "video_decode: '" killed.log && break
  sleep 0.05
done
sleep 0.1  # a few frames in: the run takes about half a second
[ -n "$worker" ] && kill -9 "$worker"
wait "$runner"; rc=$?
check "a decoder killed mid-run was found and killed" [ -n "$worker" ]
check "the run still finishes" [ "$rc" -eq 0 ]
check "the decoder was restarted" [ "$(json_field killed.json decode restarts)" -ge 1 ]
check "the file has all 300 frames once" [ "$(frames killed.mkv)" = 300 ]
check "in presentation order" increasing < <(times killed.mkv)
verdict
