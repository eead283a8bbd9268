#!/usr/bin/env bash
# The browser UI's third-party code (xterm.js and its fit addon) comes from
# npm, pinned by web/ui/package-lock.json (exact versions and the sha512 of
# each package's tarball). web/assets/vendor holds the copy that go:embed
# puts in the binary, committed so that `go build` needs nothing else.
#
#   scripts/web-vendor.sh copy    npm ci (which checks every tarball against
#                                 the lockfile's integrity), then copy the
#                                 files into web/assets/vendor
#   scripts/web-vendor.sh check   the same npm ci into a temporary directory,
#                                 then compare: every vendored file must be
#                                 byte for byte the pinned package's file
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-check}
vendor=web/assets/vendor
# package file -> vendored name
files=(
	"@xterm/xterm/lib/xterm.js:xterm.js"
	"@xterm/xterm/css/xterm.css:xterm.css"
	"@xterm/xterm/LICENSE:xterm.LICENSE"
	"@xterm/addon-fit/lib/addon-fit.js:addon-fit.js"
)
case $mode in
copy | check) ;;
*)
	echo "usage: $0 copy|check" >&2
	exit 64
	;;
esac
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cp web/ui/package.json web/ui/package-lock.json "$tmp"/
(cd "$tmp" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null)
bad=0
for f in "${files[@]}"; do
	src=$tmp/node_modules/${f%%:*}
	dst=$vendor/${f##*:}
	if [ "$mode" = copy ]; then
		mkdir -p "$vendor"
		cp "$src" "$dst"
		echo "$dst <- ${f%%:*}"
	elif ! cmp -s "$src" "$dst"; then
		echo "$dst is not ${f%%:*} as web/ui/package-lock.json pins it: run make web-assets" >&2
		bad=1
	fi
done
if [ "$mode" = check ] && [ "$bad" = 0 ]; then
	echo "web assets: $vendor matches web/ui/package-lock.json ($(cd "$tmp" && npm ls --all --parseable --long 2>/dev/null | sed -n 's/.*:\(@xterm[^:]*\).*/\1/p' | tr '\n' ' '))"
fi
exit $bad
