#!/bin/sh
# Vendor xterm.js and the addons the web console uses into static/vendor/.
#
# Why: the browser must never load code from another host, so the built files are
# committed.  Each package is fetched at a pinned version with `npm pack`, checked
# against a pinned sha512 integrity, and its built files and LICENSE are copied
# unmodified.  To upgrade: change a version, run the script once (it prints the new
# integrity on mismatch), check the changelog, update the integrity, commit.
set -eu

# package  version  sha512 integrity of the tarball (as the npm registry reports it)
PACKAGES='
@xterm/xterm            6.0.0  sha512-TQwDdQGtwwDt+2cgKDLn0IRaSxYu1tSUjgKarSDkUM0ZNiSRXFpjxEsvc/Zgc5kq5omJ+V0a8/kIM2WD3sMOYg==
@xterm/addon-fit        0.11.0 sha512-jYcgT6xtVYhnhgxh3QgYDnnNMYTcf8ElbxxFzX0IZo+vabQqSPAjC3c1wJrKB5E19VwQei89QCiZZP86DCPF7g==
@xterm/addon-search     0.16.0 sha512-9OeuBFu0/uZJPu+9AHKY6g/w0Czyb/Ut0A5t79I4ULoU4IfU5BEpPFVGQxP4zTTMdfZEYkVIRYbHBX1xWwjeSA==
@xterm/addon-web-links  0.12.0 sha512-4Smom3RPyVp7ZMYOYDoC/9eGJJJqYhnPLGGqJ6wOBfB8VxPViJNSKdgRYb8NpaM6YSelEKbA2SStD7lGyqaobw==
'

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DEST="$ROOT/static/vendor"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT INT TERM

mkdir -p "$DEST"
VERSIONS="$WORK/VERSIONS"
echo "# Vendored by scripts/vendor-xterm.sh; files are unmodified copies from the npm registry." > "$VERSIONS"

echo "$PACKAGES" | while read -r pkg version integrity; do
    [ -n "$pkg" ] || continue
    short=${pkg#@xterm/}
    mkdir -p "$WORK/$short"
    (cd "$WORK/$short" && npm pack --silent "$pkg@$version" >/dev/null)
    tarball=$(ls "$WORK/$short"/*.tgz)
    actual="sha512-$(openssl dgst -sha512 -binary "$tarball" | base64 | tr -d '\n')"
    if [ "$actual" != "$integrity" ]; then
        echo "vendor-xterm: $pkg@$version integrity mismatch" >&2
        echo "  expected $integrity" >&2
        echo "  got      $actual" >&2
        exit 1
    fi
    tar -xzf "$tarball" -C "$WORK/$short"
    out="$DEST/$short"
    rm -rf "$out"
    mkdir -p "$out"
    cp "$WORK/$short/package/LICENSE" "$out/LICENSE"
    cp "$WORK/$short"/package/lib/*.js "$out/"
    if [ -d "$WORK/$short/package/css" ]; then
        cp "$WORK/$short"/package/css/*.css "$out/"
    fi
    echo "$pkg $version $integrity" >> "$VERSIONS"
    echo "vendored $pkg@$version -> static/vendor/$short/"
done

cp "$VERSIONS" "$DEST/VERSIONS"
