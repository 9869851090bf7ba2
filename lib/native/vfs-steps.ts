// The flip's steps through the VFS (lib/fs/flip.ts): symlink, rename, unlink and lchown on the
// daemon's own mounts. With the native layer, on threads that hold no descriptor (vfs-steps.c says
// why: a process killed while one of its threads waits on its own mount must still be able to
// end), several steps one after another in one call; with fuse-native's prebuilt addon, Node's own
// calls.

import { lchown, rename, symlink, unlink } from 'node:fs/promises'
import { getSystemErrorName } from 'node:util'
import { addon, nativeLayer } from './addon.js'

export type VfsStep =
  | { op: 'symlink'; target: string; path: string }
  | { op: 'rename'; from: string; to: string }
  | { op: 'unlink'; path: string }
  /** lchown(path, -1, gid) */
  | { op: 'chgrp'; path: string; gid: number }

/**
 * Makes `steps` one after another, up to the first that fails: then rejects as Node's fs calls do
 * (an Error with the errno's `code`), with `step`, that step's index.
 */
export type VfsSteps = (steps: VfsStep[]) => Promise<void>

/** A step as the addon takes it: [op, a, b, gid] (vfs-steps.c). */
function native(s: VfsStep): [number, string, string | undefined, number] {
  switch (s.op) {
    case 'symlink': return [0, s.target, s.path, -1]
    case 'rename': return [1, s.from, s.to, -1]
    case 'unlink': return [2, s.path, undefined, -1]
    case 'chgrp': return [3, s.path, undefined, s.gid]
  }
}

function failed(errno: number, step: VfsStep, index: number): Error {
  const code = getSystemErrorName(-errno)
  const what = step.op === 'rename' ? step.to : step.path
  return Object.assign(new Error(`${code}: ${step.op} ${JSON.stringify(what)}`), { code, errno: -errno, step: index })
}

function one(s: VfsStep): Promise<void> {
  switch (s.op) {
    case 'symlink': return symlink(s.target, s.path)
    case 'rename': return rename(s.from, s.to)
    case 'unlink': return unlink(s.path)
    case 'chgrp': return lchown(s.path, -1, s.gid)
  }
}

export const vfsSteps: VfsSteps = nativeLayer()
  ? (steps) => new Promise((resolve, reject) => {
      addon.fuse_native_vfs_steps(steps.map(native), (errno, index) => (errno === 0 ? resolve() : reject(failed(errno, steps[index]!, index))))
    })
  : async (steps) => {
      for (const [i, s] of steps.entries()) {
        try {
          await one(s)
        } catch (e) {
          throw Object.assign(e as Error, { step: i })
        }
      }
    }
