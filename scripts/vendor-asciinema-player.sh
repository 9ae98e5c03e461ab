#!/bin/sh
# Vendor asciinema-player (plays the asciicast recordings on the screen-at-a-moment page)
# into static/vendor/asciinema-player/.
#
# Why: the browser must never load code from another host, so the built files are
# committed, as for xterm.js (scripts/vendor-xterm.sh). The package is fetched at a
# pinned version with `npm pack`, checked against a pinned sha512 integrity, and its
# minified bundle, stylesheet and LICENSE are copied unmodified. The player runs its
# terminal emulator as WebAssembly, so the page that loads it allows 'wasm-unsafe-eval'
# (and nothing else more) in its Content-Security-Policy.
set -eu

PKG=asciinema-player
VERSION=3.18.0
INTEGRITY=sha512-5gpt2ipFcy4NKmgkv+c/QXnJ9zMicxqWROCOuJqgwwtiYKM8Qe9hnDOvfqke5bW6M2DW/seO3uQYkQ0xeUUVtw==

ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT="$ROOT/static/vendor/asciinema-player"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT INT TERM

(cd "$WORK" && npm pack --silent "$PKG@$VERSION" >/dev/null)
tarball=$(ls "$WORK"/*.tgz)
actual="sha512-$(openssl dgst -sha512 -binary "$tarball" | base64 | tr -d '\n')"
if [ "$actual" != "$INTEGRITY" ]; then
    echo "vendor-asciinema-player: $PKG@$VERSION integrity mismatch" >&2
    echo "  expected $INTEGRITY" >&2
    echo "  got      $actual" >&2
    exit 1
fi
tar -xzf "$tarball" -C "$WORK"
rm -rf "$OUT"
mkdir -p "$OUT"
cp "$WORK/package/LICENSE" "$OUT/LICENSE"
cp "$WORK/package/dist/bundle/asciinema-player.min.js" "$WORK/package/dist/bundle/asciinema-player.css" "$OUT/"
echo "# Vendored by scripts/vendor-asciinema-player.sh; unmodified copies from the npm registry." > "$OUT/VERSION"
echo "$PKG $VERSION $INTEGRITY" >> "$OUT/VERSION"
echo "vendored $PKG@$VERSION -> static/vendor/asciinema-player/"
