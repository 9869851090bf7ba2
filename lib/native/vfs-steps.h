// The flip's steps through the VFS on threads that hold no descriptor (vfs-steps.c): its call,
// added to the addon's exports.

#ifndef DAPIFS_VFS_STEPS_H
#define DAPIFS_VFS_STEPS_H

#include <node_api.h>

// The filesystem gid of the steps' threads, by which the keeper knows their requests
// (lib/keeper/keeper.c has the same number): (gid_t) -2, no group's.
#define VFS_STEP_GID 4294967294u

// Exports fuse_native_vfs_steps(steps, cb).
void vfs_steps_export (napi_env env, napi_value exports);

#endif
