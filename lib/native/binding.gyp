{
  # The native layer's addon (build.mjs runs node-gyp here): fuse-native's addon ported to
  # libfuse 3's low-level API, linked with the system's libfuse3 (headers from libfuse3-dev,
  # found with pkg-config). napi-macros is fuse-native's header of Node-API shorthands.
  "targets": [{
    "target_name": "fuse",
    "include_dirs": [
      "<!(node -e \"require('napi-macros')\")",
      "<!@(pkg-config --cflags-only-I fuse3 | sed -e 's/-I//g')",
    ],
    "libraries": [
      "<!@(pkg-config --libs fuse3)",
    ],
    "sources": [
      "fuse-native.c",
      "node-table.c",
      "absent-names.c",
      "keeper-client.c",
      "keeper-wire.c",
      "pool.c",
      "vfs-steps.c",
    ],
    "cflags": [
      "-g",
      "-O3",
      "-Wall",
    ],
  }]
}
