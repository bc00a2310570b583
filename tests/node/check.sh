# Sourced by the node tests: named checks that count, and the verdict at the end.
passed=0
failed=0
check() {  # check NAME CONDITION-COMMAND...: counts it; fails (status 1) if the condition failed
  local name="$1"; shift
  if "$@"; then passed=$((passed + 1)); else failed=$((failed + 1)); echo "FAIL: $name"; return 1; fi
}
contains() { grep -qF -- "$2" <<<"$1"; }
not_contains() { ! grep -qF -- "$2" <<<"$1"; }
verdict() {  # exit status of the test: 0 only if no check failed
  echo "$(basename "$0" .sh): $passed passed, $failed failed"
  [ "$failed" -eq 0 ]
}
