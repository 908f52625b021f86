#!/usr/bin/env bash
# Runs a long, chatty command and shows a person what it is doing without its noise: the
# lines matching NOISE (a grep -E pattern, e.g. cargo's "Compiling x v1") are counted, not
# shown; every other line (warnings, errors) is shown as it comes; and a line of progress
# goes to stderr at least every 10 s, counting the noise lines that name one item
# (cargo's Compiling/Checking a crate, pip's Collecting a package). Exits with the
# command's status.
#
#   scripts/progress.sh LABEL UNIT NOISE COMMAND [ARG...]
#
# Example: scripts/progress.sh "cargo build" crates '^ *(Compiling|Checking) ' cargo build
set -uo pipefail

label=$1 unit=$2 noise=$3
shift 3
every=10

started=$SECONDS
last=$SECONDS
count=0
current=
phase=
partial=
# The command's output goes to a pipe: keep cargo's colours when they would reach a terminal.
if [ -t 2 ]; then export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-always}; fi
elapsed() { local s=$((SECONDS - started)); if [ "$s" -ge 60 ]; then echo "$((s / 60))m$((s % 60))s"; else echo "${s}s"; fi; }
items() { if [ "$count" = 1 ]; then echo "1 ${unit%s}"; else echo "$count $unit"; fi; }

# Everything the command prints goes through the loop below; `read -t` wakes it up when
# the command is silent (one big crate compiling) so the progress line still comes.
"$@" 2>&1 | {
  while :; do
    if IFS= read -r -t "$every" line; then
      line=$partial$line partial=
      if grep -Eq -- "$noise" <<<"$line"; then
        if grep -Eq '^ *(Compiling|Checking|Collecting) ' <<<"$line"; then
          count=$((count + 1))
          current=$(sed -E 's/^ *[A-Za-z]+ +//; s/( v?[0-9]|[=<>~!]=|\[| \().*$//' <<<"$line")
        elif grep -Eq '^Installing collected packages' <<<"$line"; then
          phase=installing
        fi
      else
        printf '%s\n' "$line" >&2
        last=$SECONDS
      fi
    else
      [ $? -gt 128 ] || { [ -n "$partial$line" ] && printf '%s\n' "$partial$line" >&2; break; }
      partial=$partial$line
    fi
    if [ $((SECONDS - last)) -ge "$every" ]; then
      if [ -n "$phase" ]; then
        printf '   %s: %s %s (%s)\n' "$label" "$phase" "$(items)" "$(elapsed)" >&2
      else
        printf '   %s: %s so far%s (%s)\n' "$label" "$(items)" "${current:+, the latest $current}" "$(elapsed)" >&2
      fi
      last=$SECONDS
    fi
  done
  # Only worth a line when the wait was long enough to show progress at all.
  if [ $((SECONDS - started)) -ge "$every" ]; then
    printf '   %s: done, %s in %s\n' "$label" "$(items)" "$(elapsed)" >&2
  fi
}
exit "${PIPESTATUS[0]}"
