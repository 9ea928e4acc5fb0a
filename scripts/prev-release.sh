#!/usr/bin/env bash
# Builds the previous release's binary, for the mixed-version cluster test
# (tests/cluster/upgrade.rs): target/prev/switchboard, from commit $PREV_RELEASE.
# Cached: does nothing when that binary is there and was built from that commit. The build
# shares target/ with this checkout, so the dependencies compiled for it are reused.
set -euo pipefail
cd "$(dirname "$0")/.."

# The commit of the release before this one (main before protocol 2 and room channels).
PREV_RELEASE=${PREV_RELEASE:-13e0970}
out=target/prev
if [ -x "$out/switchboard" ] && [ "$(cat "$out/commit" 2>/dev/null)" = "$PREV_RELEASE" ]; then
    exit 0
fi
git cat-file -e "$PREV_RELEASE^{commit}" || {
    echo "commit $PREV_RELEASE is not in this clone (a shallow one?): git fetch --unshallow" >&2
    exit 1
}
src=target/prev-src
rm -rf "$src"
mkdir -p "$src" "$out"
git archive "$PREV_RELEASE" | tar -x -C "$src"
CARGO_TARGET_DIR="$PWD/target" cargo build --quiet --locked --bin switchboard \
    --manifest-path "$src/Cargo.toml"
# Copied out at once: the next build of this checkout writes target/debug/switchboard again.
cp target/debug/switchboard "$out/switchboard"
echo "$PREV_RELEASE" >"$out/commit"
rm -rf "$src"
echo "built the previous release ($PREV_RELEASE) into $out/switchboard" >&2
