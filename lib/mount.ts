// The FUSE adapter: fuse-native callbacks answered from the tree (tree.ts). It holds no state
// of its own but the open files.
//
// Every handler runs on Node's main thread, one at a time, while libfuse's worker threads wait
// for the answers; so handlers are synchronous and small. And this process must never make a
// synchronous fs call on its own mount: the call would wait for a handler that can only run
// after it returns (a deadlock that not even SIGKILL ends).
//
// Kernel caching is on (entry and attribute timeouts, kernel_cache for page contents). That is
// safe because nothing under a name ever changes: a flip gives a new generation directory name,
// which the kernel has never seen. Only the symlinks change, and libfuse2 never lets the kernel
// cache a symlink's target, so every path walk asks for `..data` afresh. When a generation is
// dropped, the kernel is told to forget it (forgetEntry), or it would keep it cached for good.
//
// An open file keeps the bytes it was opened with, whatever flips come after, as a file opened
// on the kubelet's tmpfs keeps its inode after the directory is replaced.
//
// Read-only: every mutation answers EROFS. An op left unimplemented would answer ENOSYS, so
// each one is listed. flush and fsync are left out on purpose: the kernel takes their ENOSYS as
// "nothing to do" and stops sending them, which saves a request on every close.

import Fuse, { type Ops } from 'fuse-native'
import createDebug from 'debug'
import { createRequire } from 'node:module'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import type { Gate, Mutation } from './flip.js'
import type { Node, Tree } from './tree.js'

const log = createDebug('dapifs:mount')
const logRequest = createDebug('dapifs:requests')

const O_ACCMODE = 3
const O_TRUNC = 0o1000
const W_OK = 2

export interface MountOptions {
  /** Let other users in (allow_other). Needs root, or user_allow_other in /etc/fuse.conf. */
  allowOther?: boolean
  /** Kernel entry and attribute cache timeout, seconds. */
  cacheSeconds?: number
  /** libfuse's own debug output. */
  debug?: boolean
  /** Called once per FUSE request with its op name (for counting). */
  onRequest?: (op: string) => void
  /** Whether a mutation is the daemon's own pending flip step (flip.ts); all others get EROFS. */
  accept?: (m: Mutation) => boolean
  /** Holds top-level readlinks while ..data is renamed (flip.ts). */
  gate?: Gate
}

/** Always EROFS. symlink, rename and unlink are too, but for the daemon's own flip steps (below). */
const READ_ONLY_OPS = [
  'create', 'write', 'truncate', 'ftruncate', 'link', 'mkdir', 'rmdir',
  'chmod', 'chown', 'utimens', 'setxattr', 'removexattr', 'mknod',
] as const

export function makeOps(tree: Tree, onRequest?: (op: string) => void, accept: (m: Mutation) => boolean = () => false, gate?: Gate): Ops {
  const open = new Map<number, Node & { kind: 'file' }>()
  const readlink = (path: string, cb: (code: number, target?: string) => void): void => {
    const node = tree.lookup(path)
    if (!node) { log('readlink %s: ENOENT', path); return cb(Fuse.ENOENT) }
    if (node.kind !== 'link') return cb(Fuse.EINVAL)
    cb(0, node.target)
  }
  let nextFd = 1
  const count = onRequest ?? (logRequest.enabled ? (op: string): void => logRequest(op) : (): void => {})

  const ops: Ops = {
    getattr(path, cb) {
      count('getattr')
      const node = tree.lookup(path)
      if (!node) { log('getattr %s: ENOENT', path); return cb(Fuse.ENOENT) }
      cb(0, node.stat)
    },
    fgetattr(path, fd, cb) {
      count('fgetattr')
      const node = open.get(fd) ?? tree.lookup(path)
      if (!node) return cb(Fuse.ENOENT)
      cb(0, node.stat)
    },
    access(path, mode, cb) {
      count('access')
      if (!tree.lookup(path)) return cb(Fuse.ENOENT)
      cb(mode & W_OK ? Fuse.EROFS : 0)
    },
    readlink(path, cb) {
      count('readlink')
      if (gate && path.lastIndexOf('/') === 0) {
        if (path === '/..data') gate.paid()
        else if (gate.closed) return gate.hold(() => { gate.answered(); readlink(path, cb) })
        else gate.answered()
      }
      readlink(path, cb)
    },
    readdir(path, cb) {
      count('readdir')
      const node = tree.lookup(path)
      if (!node) return cb(Fuse.ENOENT)
      if (node.kind !== 'dir') return cb(Fuse.ENOTDIR)
      cb(0, ['.', '..', ...node.entries])
    },
    open(path, flags, cb) {
      count('open')
      const node = tree.lookup(path)
      if (!node) { log('open %s: ENOENT', path); return cb(Fuse.ENOENT) }
      if (node.kind === 'dir') return cb(Fuse.EISDIR)
      if (node.kind !== 'file') return cb(Fuse.EINVAL)
      if ((flags & O_ACCMODE) !== 0 || flags & O_TRUNC) return cb(Fuse.EROFS)
      const fd = nextFd++
      open.set(fd, node)
      cb(0, fd)
    },
    read(path, fd, buf, len, pos, cb) {
      count('read')
      const node = open.get(fd)
      if (!node) return cb(Fuse.EBADF)
      if (pos >= node.data.length) return cb(0)
      cb(node.data.copy(buf, 0, pos, Math.min(node.data.length, pos + len)))
    },
    release(path, fd, cb) {
      count('release')
      open.delete(fd)
      cb(0)
    },
    statfs(path, cb) {
      count('statfs')
      cb(0, { bsize: 4096, frsize: 4096, blocks: 0, bfree: 0, bavail: 0, files: 0, ffree: 0, favail: 0, fsid: 0, flag: 1, namemax: 255 })
    },
    getxattr(path, name, position, cb) {
      count('getxattr')
      cb(tree.lookup(path) ? Fuse.ENODATA : Fuse.ENOENT)
    },
    listxattr(path, cb) {
      count('listxattr')
      if (!tree.lookup(path)) return cb(Fuse.ENOENT)
      cb(0, [])
    },
  }
  for (const op of READ_ONLY_OPS) {
    ops[op] = (...args: unknown[]): void => {
      count(op)
      log('%s %s: EROFS', op, args[0])
      const cb = args[args.length - 1] as (code: number) => void
      cb(Fuse.EROFS)
    }
  }
  // The three the daemon's own flips use (flip.ts); anything but the pending one is EROFS.
  ops.symlink = (target: string, path: string, cb: (code: number) => void): void => {
    count('symlink')
    cb(accept({ op: 'symlink', target, path }) ? 0 : Fuse.EROFS)
  }
  ops.rename = (from: string, to: string, cb: (code: number) => void): void => {
    count('rename')
    cb(accept({ op: 'rename', from, to }) ? 0 : Fuse.EROFS)
  }
  ops.unlink = (path: string, cb: (code: number) => void): void => {
    count('unlink')
    cb(accept({ op: 'unlink', path }) ? 0 : Fuse.EROFS)
  }
  return ops
}

/** A mounted tree. */
export class Mount {
  private readonly fuse: Fuse
  private live = false
  /** Kernel notifications in flight (forgetEntry), and who waits for them to come back. */
  private forgetting = 0
  private forgotten: (() => void) | undefined

  constructor(readonly mountpoint: string, tree: Tree, opts: MountOptions = {}) {
    const cache = String(opts.cacheSeconds ?? 60)
    this.fuse = new Fuse(mountpoint, makeOps(tree, opts.onRequest, opts.accept, opts.gate), {
      force: true, // unmounts a stale mount ("Transport endpoint is not connected") first
      mkdir: false,
      allowOther: opts.allowOther ?? true,
      defaultPermissions: true,
      kernelCache: true,
      entryTimeout: cache,
      attrTimeout: cache,
      // fuse-native has no noatime option, and joins its options with commas. Without noatime
      // the kernel drops the cached atime after each read, and the next fstat costs a request.
      fsname: 'dapifs,noatime',
      subtype: 'dapifs',
      timeout: false, // our handlers answer at once; the per-op timer only costs time
      debug: opts.debug ?? false,
    })
  }

  /**
   * How many thread-locals fuse-native has set up for libfuse's worker threads. The patched
   * build recycles them, so this stays at the peak of workers alive at once; the prebuilt addon
   * sets up one more for every worker libfuse starts.
   */
  threadsSetUp(): number {
    return this.fuse._threads.size
  }

  /**
   * Tells the kernel to drop a top-level name it may have cached: a generation that can no longer
   * be looked up. The kernel then forgets the inodes below it, and libfuse frees its nodes for
   * them. Without this the kernel keeps what it looked up until memory runs short, and libfuse
   * keeps about 0.4 KB per flip. A file held open keeps its inode, so it reads on. A no-op with
   * fuse-native's prebuilt addon, which lacks the call.
   */
  forgetEntry(name: string): void {
    const invalidate = addon().fuse_native_invalidate_root_entry
    if (!this.live || !invalidate) return
    this.forgetting++
    invalidate(this.fuse._thread, name, (res) => {
      if (res !== 0) log('forgetting %s: %d', name, res) // -ENOENT: the kernel had not cached it
      if (--this.forgetting === 0) this.forgotten?.()
    })
  }

  async mount(): Promise<void> {
    await new Promise<void>((resolve, reject) => this.fuse.mount((err) => (err ? reject(err) : resolve())))
    this.live = true
  }

  async unmount(): Promise<void> {
    this.live = false
    // A notification written after the channel is closed would go to whatever reuses its fd.
    if (this.forgetting > 0) await new Promise<void>((resolve) => { this.forgotten = resolve })
    await new Promise<void>((resolve, reject) => this.fuse.unmount((err) => (err ? reject(err) : resolve())))
  }
}

/** Builds fuse-native from patched source (npm's postinstall runs it). */
export const fuseNativeBuild = fileURLToPath(new URL('../scripts/fuse-native/build.mjs', import.meta.url))

interface Addon {
  dapifs_patch?: number
  fuse_native_invalidate_root_entry?: (thread: Buffer, name: string, cb: (res: number) => void) => void
}
let loaded: Addon | undefined

/** fuse-native's addon: the same loader and directory as its index.js, so the same module. */
function addon(): Addon {
  if (loaded) return loaded
  const dir = path.dirname(createRequire(import.meta.url).resolve('fuse-native/package.json'))
  const load = createRequire(path.join(dir, 'index.js'))('node-gyp-build') as (dir: string) => Addon
  return (loaded = load(dir))
}

/**
 * Whether the fuse-native addon that loads is the build from patched source, which recycles
 * libfuse workers' thread-locals instead of leaking them, and can make the kernel forget names.
 */
export function patchedAddon(): boolean {
  return addon().dapifs_patch === 1
}
