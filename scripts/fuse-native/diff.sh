#!/bin/bash
# Regenerates the hunks of fuse-native.patch from an edited node_modules/fuse-native (the files
# build.mjs patches, against the FILE.orig it keeps), keeping the patch's header. For developers.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
dir=$here/../../node_modules/fuse-native
patch=$here/fuse-native.patch
head=$(sed -n '1,/^--- a\//p' "$patch" | sed '$d')
{
  printf '%s\n\n' "$head"
  for f in fuse-native.c binding.gyp index.js; do
    (cd "$dir" && diff -u --label "a/$f" --label "b/$f" "$f.orig" "$f") || [ $? -eq 1 ]
  done
} > "$patch.tmp"
mv "$patch.tmp" "$patch"
