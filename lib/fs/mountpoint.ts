// Checks a mountpoint before mounting, and cleans up after a killed daemon.
//
// A daemon that died without unmounting leaves its mount behind, answering every access with
// ENOTCONN ("Transport endpoint is not connected"). Such a stale mount is lazily unmounted
// before we mount again; a live mount there is refused, as is a path that is missing or not a
// directory. Nothing here touches the mountpoint synchronously: a hung filesystem there must
// not hang us, so its stat has a time limit.

import type { Stats } from 'node:fs'
import { readFile, stat } from 'node:fs/promises'
import path from 'node:path'
import { fusermount } from '../native/fuse.js'
import { InputError } from '../volume/shape.js'

/** The type /proc/self/mountinfo gives a dapifs mount (fuse, subtype dapifs: mount.ts). */
export const DAPIFS_FSTYPE = 'fuse.dapifs'

/** The mount points listed in /proc/self/mountinfo, with their filesystem types. */
export async function mounts(): Promise<Map<string, string>> {
  const text = await readFile('/proc/self/mountinfo', 'utf8')
  const out = new Map<string, string>()
  const unescape = (s: string): string => s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)))
  for (const line of text.split('\n')) {
    const f = line.split(' ')
    const dash = f.indexOf('-')
    if (f.length < 10 || dash < 0) continue
    out.set(unescape(f[4]!), f[dash + 1]!)
  }
  return out
}

/** stat(p), or its error; ETIMEDOUT if the filesystem there does not answer within `ms`. */
function statWithin(p: string, ms: number): Promise<Stats | NodeJS.ErrnoException> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(Object.assign(new Error('timed out'), { code: 'ETIMEDOUT' })), ms)
    stat(p).catch((e: NodeJS.ErrnoException) => e).then((r) => { clearTimeout(timer); resolve(r) })
  })
}

/** fusermount -uz, without a shell (fusermount): a mountpoint's name may be anyone's data. */
export function lazyUnmount(mountpoint: string): Promise<void> {
  return new Promise((resolve, reject) => fusermount(['-uz', mountpoint], (err) => (err ? reject(err) : resolve())))
}

/**
 * Makes sure `mountpoint` can be mounted on: an existing directory with nothing live mounted
 * there. Returns whether a stale mount was cleaned up. Throws InputError (exit 2) otherwise.
 */
export async function prepareMountpoint(mountpoint: string): Promise<boolean> {
  const abs = path.resolve(mountpoint)
  const fail = (problem: string): never => { throw new InputError(mountpoint, problem) }
  const type = (await mounts()).get(abs)
  if (type !== undefined) {
    const st = await statWithin(abs, 2000)
    if (!(st instanceof Error) || st.code !== 'ENOTCONN') {
      fail(`is busy: a ${type} filesystem is mounted there${st instanceof Error ? ` (${st.code})` : ''}; unmount it first`)
    }
    try {
      await lazyUnmount(abs)
    } catch (e) {
      fail(`a stale mount is there and could not be unmounted: ${(e as Error).message}`)
    }
    return true
  }
  const st = await statWithin(abs, 2000)
  if (st instanceof Error) fail(st.code === 'ENOENT' ? 'does not exist (create the directory first)' : `cannot be used: ${st.code ?? st.message}`)
  else if (!st.isDirectory()) fail('is not a directory')
  return false
}
