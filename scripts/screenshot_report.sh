#!/usr/bin/env bash
# Render a report's index.html with headless Chromium (Debian's `chromium`) into a PNG.
#
#   scripts/screenshot_report.sh [REPORT_HTML] [OUTPUT_PNG]
#
# REPORT_HTML defaults to studies/demo/reports/demo/index.html (what `make demo` writes);
# OUTPUT_PNG defaults to docs/report-example.png. Install Chromium with
# `apt-get install -y chromium` when it is missing. Nothing is fetched from the network:
# the report is self-contained and the flags below switch off Chromium's own traffic.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
html="${1:-$here/studies/demo/reports/demo/index.html}"
out="${2:-$here/docs/report-example.png}"
width="${SCREENSHOT_WIDTH:-1400}"
height="${SCREENSHOT_HEIGHT:-3000}"

if [[ ! -f "$html" ]]; then
    echo "error: $html does not exist -> build it with 'avalanche-hpc report STUDY --experiment NAME' (or 'make demo')" >&2
    exit 1
fi
browser="$(command -v chromium || command -v chromium-browser || true)"
if [[ -z "$browser" ]]; then
    echo "error: chromium not found -> install it with 'apt-get install -y chromium' (Debian)" >&2
    exit 1
fi

html_abs="$(cd "$(dirname "$html")" && pwd)/$(basename "$html")"
mkdir -p "$(dirname "$out")"
out_abs="$(cd "$(dirname "$out")" && pwd)/$(basename "$out")"
profile="$(mktemp -d)"
tmp_png="$(mktemp --suffix=.png)"
trap 'rm -rf "$profile" "$tmp_png"' EXIT

"$browser" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --user-data-dir="$profile" --hide-scrollbars \
    --window-size="$width,$height" --screenshot="$tmp_png" "file://$html_abs" >/dev/null 2>&1

if [[ ! -s "$tmp_png" ]]; then
    echo "error: chromium wrote no screenshot for $html_abs" >&2
    exit 1
fi
chmod 644 "$tmp_png"
mv -f "$tmp_png" "$out_abs.tmp-$$" && mv -f "$out_abs.tmp-$$" "$out_abs"   # complete file or none
echo "$out_abs"
