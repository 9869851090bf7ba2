#!/bin/bash
# Prints what the native layer (lib/native/) changes in fuse-native's addon: a unified diff of
# fuse-native 2.2.6's own fuse-native.c and binding.gyp, as npm installed them, against ours. For
# readers; nothing else needs it. The native layer's other C files have no counterpart there.
set -euo pipefail
cd "$(dirname "$0")/.."
upstream=node_modules/fuse-native
for f in fuse-native.c binding.gyp; do
  diff -u --label "fuse-native/$f" --label "lib/native/$f" "$upstream/$f" "lib/native/$f" || [ $? -eq 1 ]
done
ours=$(cd lib/native && ls *.[ch] | grep -vx fuse-native.c | tr '\n' ' ')
[ -z "$ours" ] || echo "# and ours alone, in lib/native/: $ours" >&2
