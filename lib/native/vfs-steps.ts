// The flip's steps through the VFS (lib/fs/flip.ts): symlink, rename, unlink and lchown on the
// daemon's own mounts. With the native layer, on threads that hold no descriptor (vfs-steps.c says
// why: a process killed while one of its threads waits on its own mount must still be able to
// end); with fuse-native's prebuilt addon, Node's own calls.

import { lchown, rename, symlink, unlink } from 'node:fs/promises'
import { getSystemErrorName } from 'node:util'
import { addon, nativeLayer } from './addon.js'

export interface VfsSteps {
  symlink(target: string, path: string): Promise<void>
  rename(from: string, to: string): Promise<void>
  unlink(path: string): Promise<void>
  /** lchown(path, -1, gid). */
  chgrp(path: string, gid: number): Promise<void>
}

const SYMLINK = 0
const RENAME = 1
const UNLINK = 2
const LCHOWN = 3
const NAMES = ['symlink', 'rename', 'unlink', 'lchown']

/** One step; fails as Node's fs calls do: an Error with the errno's `code`. */
function step(op: number, a: string, b: string | undefined, gid = -1): Promise<void> {
  return new Promise((resolve, reject) => {
    addon.fuse_native_vfs_step(op, a, b, gid, (errno) => {
      if (errno === 0) return resolve()
      const code = getSystemErrorName(-errno)
      reject(Object.assign(new Error(`${code}: ${NAMES[op]} ${JSON.stringify(b ?? a)}`), { code, errno: -errno }))
    })
  })
}

export const vfsSteps: VfsSteps = nativeLayer()
  ? {
      symlink: (target, path) => step(SYMLINK, target, path),
      rename: (from, to) => step(RENAME, from, to),
      unlink: (path) => step(UNLINK, path, undefined),
      chgrp: (path, gid) => step(LCHOWN, path, undefined, gid),
    }
  : { symlink, rename, unlink, chgrp: (path, gid) => lchown(path, -1, gid) }
