// The FUSE adapter: fuse-native callbacks answered from the tree (tree.ts). It holds no state
// of its own.
//
// Every handler runs on Node's main thread, one at a time, while libfuse's worker threads wait
// for the answers; so handlers are synchronous and small. And this process must never make a
// synchronous fs call on its own mount: the call would wait for a handler that can only run
// after it returns (a deadlock that not even SIGKILL ends).
//
// The kernel caches everything it can, so that a warm read asks the daemon nothing (libfuse 3,
// through fuse-native as the native layer ports it: lib/native/): lookups and attributes for 60 s, file
// pages (kernel_cache), symlink targets (cacheSymlinks), directories' listings (the native layer's
// opendir), and opens: open answers ENOSYS (in C, noOpen), after which the kernel stops sending
// open and release and reads from kept pages.
// That is safe because nothing under a name ever changes but the links: a flip gives a new
// generation directory name, which the kernel has never seen, and `..data` changes through the
// VFS (flip.ts), which moves the kernel's own dentries. A link changed inside the daemon instead
// (--no-inotify, a fallback) must be invalidated (invalidate()), and a dropped generation is
// forgotten (forgetEntry), or the kernel would keep it cached for good.
//
// The kernel knows each node by an id that the tree gives it (tree.ts, inoOf), not by one that
// libfuse makes up, so that another process can take the mount over and answer for the ids the
// kernel holds (adoptFd; native-notes/, Restarts).
//
// Names that are not there are cached too (negative entries, negative_timeout): a container that
// stats missing names in a loop asks the daemon once per name, not once per stat, so it cannot keep
// the thread that serves every volume busy. A name can only appear in a generation directory that
// is new (its contents never change), or at the top, through a flip: the VFS steps of a flip
// replace the kernel's negative entries themselves, and flip.ts invalidates what a flip inside
// the daemon adds, and each new generation's name before it is linked, if a lookup of it was
// answered absent (the native layer keeps which: lib/native/absent-names.c).
//
// Reads come by path, with no file handle. A file held open reads its generation's bytes from
// the kernel's pages; if those are evicted, the read reaches us by path, and the tree still has
// the bytes of recently dropped generations (tree.file).
//
// Read-only: every mutation answers EROFS. An op left unimplemented would answer ENOSYS, so
// each one is listed. flush and fsync are left out on purpose: the kernel takes their ENOSYS as
// "nothing to do" and stops sending them. A write open succeeds (the kernel no longer asks), and
// the write then fails with EROFS; an open that truncates fails with EROFS at once.

import createDebug from 'debug'
import { nativeLayer } from '../native/addon.js'
import Fuse, { type Ops, type Opts as FuseOpts } from '../native/fuse.js'
import type { Mutation } from './flip.js'
import { DAPIFS_FSTYPE } from './mountpoint.js'
import type { Tree } from './tree.js'

const log = createDebug('dapifs:mount')
const logRequest = createDebug('dapifs:requests')

const W_OK = 2
/**
 * The threads that serve every mount of the process (the native layer's shared pool): enough that
 * a request of one mount is read while others wait on Node's thread, which answers them one at a
 * time anyway.
 */
const WORKERS = 4

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
  /**
   * Take over the live connection on this /dev/fuse descriptor (from the keeper) instead of
   * mounting: a restart (native-notes/, Restarts). The tree must already hold what the previous
   * process served, so that the ids the kernel holds resolve (tree.inodes).
   */
  adoptFd?: number
}

/** Always EROFS. symlink, rename, unlink and chown are too, but for the daemon's own flip steps (below). */
const READ_ONLY_OPS = [
  'create', 'write', 'truncate', 'ftruncate', 'link', 'mkdir', 'rmdir',
  'chmod', 'utimens', 'setxattr', 'removexattr', 'mknod',
] as const

export function makeOps(tree: Tree, onRequest?: (op: string) => void, accept: (m: Mutation) => boolean = () => false): Ops {
  const count = onRequest ?? (logRequest.enabled ? (op: string): void => logRequest(op) : (): void => {})

  const ops: Ops = {
    getattr(path, cb) {
      count('getattr')
      const node = tree.lookup(path)
      if (!node) { log('getattr %s: ENOENT', path); return cb(Fuse.ENOENT) }
      cb(0, node.stat)
    },
    access(path, mode, cb) {
      count('access')
      if (!tree.lookup(path)) return cb(Fuse.ENOENT)
      cb(mode & W_OK ? Fuse.EROFS : 0)
    },
    readlink(path, cb) {
      count('readlink')
      const node = tree.lookup(path)
      if (!node) { log('readlink %s: ENOENT', path); return cb(Fuse.ENOENT) }
      if (node.kind !== 'link') return cb(Fuse.EINVAL)
      cb(0, node.target)
    },
    readdir(path, cb) {
      count('readdir')
      const node = tree.lookup(path)
      if (!node) return cb(Fuse.ENOENT)
      if (node.kind !== 'dir') return cb(Fuse.ENOTDIR)
      cb(0, ['.', '..', ...node.entries])
    },
    read(path, fd, buf, len, pos, cb) {
      count('read')
      const data = tree.file(path)
      if (!data) { log('read %s: ENOENT', path); return cb(Fuse.ENOENT) }
      if (pos >= data.length) return cb(0)
      cb(data.copy(buf, 0, pos, Math.min(data.length, pos + len)))
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
  }  // A link's group set to what it is (its ATTRIB event, flip.ts); the owner is never changed.
  ops.chown = (path: string, uid: number, gid: number, cb: (code: number) => void): void => {
    count('chown')
    const ownerKept = uid === -1 || uid === 0xffffffff
    cb(ownerKept && accept({ op: 'chown', path, gid }) ? 0 : Fuse.EROFS)
  }

  return ops
}

/** Mount options, one object for each set of settings: fuse.ts makes its option string once for each. */
const optionSets = new Map<string, FuseOpts>()

function fuseOptions(cacheSeconds: number, allowOther: boolean, debug: boolean): FuseOpts {
  const key = `${cacheSeconds} ${allowOther} ${debug}`
  let options = optionSets.get(key)
  if (!options) {
    const cache = String(cacheSeconds)
    optionSets.set(key, (options = {
      force: true, // unmounts a stale mount ("Transport endpoint is not connected") first
      mkdir: false,
      allowOther,
      defaultPermissions: true,
      kernelCache: true,
      entryTimeout: cache,
      attrTimeout: cache,
      cacheSymlinks: true,
      noOpen: true,
      workers: WORKERS,
      fsname: 'dapifs',
      // Without noatime the kernel drops the cached atime after each read, and the next fstat
      // costs a request.
      noatime: true,
      negativeTimeout: cacheSeconds, // see the header: negative entries
      subtype: DAPIFS_FSTYPE.slice('fuse.'.length),
      timeout: false, // our handlers answer at once; the per-op timer only costs time
      debug,
    }))
  }
  return options
}

/** A mounted tree. */
export class Mount {
  /** Made by mount(): fuse-native reads a takeover's `adopt` in its constructor. */
  private fuse: Fuse | undefined
  private live = false
  /** Kernel notifications in flight, and who waits for them to come back. */
  private notifying = 0
  private notified: (() => void) | undefined

  constructor(readonly mountpoint: string, private readonly tree: Tree, private readonly opts: MountOptions = {}) {}

  private make(): Fuse {
    const { opts } = this
    return new Fuse(this.mountpoint, makeOps(this.tree, opts.onRequest, opts.accept), fuseOptions(opts.cacheSeconds ?? 60, opts.allowOther ?? true, opts.debug ?? false),
      // The ids the kernel holds are known only now that the tree holds what was served before.
      opts.adoptFd !== undefined ? { fd: opts.adoptFd, known: this.tree.inodes() } : undefined)
  }

  /**
   * How many thread-locals have been set up for the threads that serve requests: the native
   * layer's shared pool has one set per worker, for every mount of the process; fuse-native's
   * prebuilt addon sets up one more for every worker libfuse 2 starts for this mount.
   */
  threadsSetUp(): number {
    return nativeLayer() ? Fuse.pool().workers : this.fuse?._threads.size ?? 0
  }

  /**
   * Tells the kernel to drop a top-level name it may have cached: a generation that can no longer
   * be looked up. The kernel then forgets the inodes below it, and libfuse frees its nodes for
   * them. Without this the kernel keeps what it looked up until memory runs short, and libfuse
   * keeps about 0.4 KB per flip. A file held open keeps its inode, so it reads on.
   */
  forgetEntry(name: string): void {
    void this.invalidate([name])
  }

  /**
   * After links changed inside the daemon: the kernel drops its root entries `names` (and so the
   * cached targets of the links they were). Resolves once the kernel has them.
   */
  async invalidate(names: string[]): Promise<void> {
    await Promise.all(names.map((name) => this.notify((cb) => this.fuse!.invalidateRootEntry(name, cb), `forgetting ${name}`)))
  }

  /**
   * Whether the kernel may hold a root name as absent (a negative entry), and must be told before
   * the name appears: a lookup of it was answered so, or is under way. Yes unless the native layer
   * knows otherwise.
   */
  mayHoldAbsent(name: string): boolean {
    return !this.live || !nativeLayer() || this.fuse!.mayHoldAbsent(name)
  }

  /**
   * After the root's entries changed inside the daemon: the kernel drops the root's listing it
   * keeps (the native layer's opendir asks it to keep listings). Changes made through the VFS
   * need none: the kernel drops it itself. Resolves once the kernel has.
   */
  invalidateListing(): Promise<void> {
    return this.notify((cb) => this.fuse!.invalidateRootListing(cb), 'the root\'s listing')
  }

  /** One notification to the kernel; a no-op unless mounted, and with the prebuilt addon. */
  private notify(send: (cb: (res: number) => void) => void, what: string): Promise<void> {
    if (!this.live || !nativeLayer()) return Promise.resolve()
    this.notifying++
    return new Promise((resolve) => send((res) => {
      if (res !== 0) log('%s: %d', what, res) // -ENOENT: the kernel had not cached it
      if (--this.notifying === 0) this.notified?.()
      resolve()
    }))
  }

  /** The connection's /dev/fuse descriptor, for the keeper; the mount's own: do not close it. */
  sessionFd(): number {
    return this.fuse!.sessionFd()
  }

  async mount(): Promise<void> {
    const fuse = (this.fuse = this.make())
    await new Promise<void>((resolve, reject) => fuse.mount((err) => (err ? reject(err) : resolve())))
    this.live = true
  }

  /**
   * Leaves the connection to the keeper and the next process: no more requests are read here (a
   * process that is leaving). With fuse-native's prebuilt addon, nothing: it cannot hand over.
   */
  detach(): void {
    this.live = false
    this.fuse?.detach()
  }

  async unmount(): Promise<void> {
    this.live = false
    // A notification written after the channel is closed would go to whatever reuses its fd.
    if (this.notifying > 0) await new Promise<void>((resolve) => { this.notified = resolve })
    const fuse = this.fuse
    if (!fuse) return
    await new Promise<void>((resolve, reject) => fuse.unmount((err) => (err ? reject(err) : resolve())))
  }
}

/**
 * Resolves once the requests that waited for this process are answered: none being read or
 * served, and none read since, twice in a row a millisecond apart; or after `maxMs`, whatever
 * comes. A restarted agent waits for it before it loads what can wait (gRPC, the Kubernetes
 * client), which holds Node's thread for hundreds of milliseconds: the readers that waited
 * through the restart go first.
 */
export async function settled(maxMs = 250): Promise<void> {
  if (!nativeLayer()) return
  const end = performance.now() + maxMs
  let quiet = 0
  let last = -1
  while (performance.now() < end) {
    const p = Fuse.pool()
    if (p.inflight === 0 && p.requests === last) {
      if (++quiet >= 2) return
    } else {
      quiet = 0
    }
    last = p.requests
    await new Promise((resolve) => setTimeout(resolve, 1))
  }
}

/**
 * Whether the addon that loaded is the native layer's (lib/native), or fuse-native's prebuilt
 * libfuse 2 addon, with which dapifs runs degraded (flips inside the daemon: daemon.ts).
 */
export { nativeLayer, nativeBuild } from '../native/addon.js'
