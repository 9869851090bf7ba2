// The flip's steps through the VFS on threads that hold no descriptor (vfs-steps.c): its call,
// added to the addon's exports.

#ifndef DAPIFS_VFS_STEPS_H
#define DAPIFS_VFS_STEPS_H

#include <node_api.h>

// Exports fuse_native_vfs_step(op, a, b, gid, cb).
void vfs_steps_export (napi_env env, napi_value exports);

#endif
