// fuse-native's Fuse, for the native layer (fuse-native.c, libfuse 3's low-level API).
//
// fuse-native's own JS drives our addon (addon.ts says how it gets loaded): its handler
// machinery, opcodes, option string and errno table are used as published. This subclass
// changes only what the port needs:
// - mounting passes the port's settings as an 8th argument ([workers, 0, cacheSymlinks,
//   noOpen]), or takes a live connection over instead of mounting (`adopt`);
// - stats carry inode numbers up to 2^53 - 1 (a 19th slot for the high word), because the port
//   uses them as node ids;
// - unmounting runs fusermount without a shell: fuse-native's runs `fusermount -uz "MNT"`
//   through one, and a mountpoint's name is not ours to trust (a pod's, in the CSI driver);
// - what fuse-native lacks: invalidateRootEntry, invalidateRootListing, mayHoldAbsent, sessionFd, adoptResend, connInfo, detach, the
//   shared pool's figures (Fuse.pool), and the mount options noatime and negative_timeout;
// - a mount costs less of Node's thread, which a takeover of a thousand volumes pays a thousand
//   times: one array of handlers serves every mount (the addon calls a handler with its mount as
//   `this`; fuse-native makes 35 closures per mount, over it), and the option string is made
//   once for each options object (Mount shares one between its mounts).
// It overrides fuse-native 2.2.6's internals (_open, _close, _op_getattr, _op_fgetattr,
// _op_readdir), which is why package.json pins that version.
//
// With fuse-native's prebuilt addon (the fallback), the same class mounts as fuse-native would
// (that addon ignores the 8th argument and reads 18 slots of a stat); what only the port has is
// not to be called then (nativeLayer()): adopting fails, sessionFd() is -1.

import type FuseNativeClass from 'fuse-native'
import type { Ops, Opts as FuseNativeOpts, Signal, Stat } from 'fuse-native'
import { execFile } from 'node:child_process'
import { mkdir, stat, type Stats } from 'node:fs'
import { createRequire } from 'node:module'
import path from 'node:path'
import { addon, nativeLayer } from './addon.js'

// Required, not imported: fuse-native is CommonJS, and its import through Node 20's ESM loader
// (which scans CommonJS for names to export) cost a restarted agent 15-20 ms more before it served
// its volumes again (native-notes/README.md, "How long readers wait").
const FuseNative = createRequire(import.meta.url)('fuse-native') as typeof FuseNativeClass

export type { Ops, Stat }

export interface Opts extends FuseNativeOpts {
  /** FUSE_CAP_CACHE_SYMLINKS: the kernel keeps link targets in its page cache. */
  cacheSymlinks?: boolean
  /** With no open handler, open answers ENOSYS in C, and the kernel stops sending it. */
  noOpen?: boolean
  /**
   * The threads of the shared pool that serves every mount of the process (lib/native/pool.c);
   * the first mount starts it, and decides (default 4).
   */
  workers?: number
  /**
   * Take over the live connection of a /dev/fuse descriptor whose server died, instead of
   * mounting (mnt is not touched); `known`: [path, ino] of the nodes the kernel may hold. The
   * Fuse object owns `fd` from then on (libfuse closes it after unmount).
   */
  adopt?: { fd: number; known?: Array<[string, number]> }
  /** The mount option noatime, which fuse-native has no option for. */
  noatime?: boolean
  /** Seconds the kernel keeps a name's absence (negative_timeout; the addon reads it). */
  negativeTimeout?: number
}

/**
 * fuse-native's opcodes (its OpcodesAndDefaults, in its order), each with the values a handler
 * signals when the ops leave it out, or leave values out: the addon reads them.
 */
const OPCODES: ReadonlyArray<readonly [name: string, defaults?: () => unknown[]]> = [
  ['init'], ['error'], ['access', () => [0]], ['statfs', () => [new Uint32Array(11)]],
  ['fgetattr', () => [statArray()]], ['getattr', () => [statArray()]], ['flush'], ['fsync'], ['fsyncdir'],
  ['readdir', () => [[], []]], ['truncate'], ['ftruncate'], ['utimens'], ['readlink', () => ['']], ['chown'],
  ['chmod'], ['mknod'], ['setxattr'], ['getxattr'], ['listxattr'], ['removexattr'], ['open', () => [0]],
  ['opendir', () => [0]], ['read', () => [0]], ['write', () => [0]], ['release'], ['releasedir'],
  ['create', () => [0]], ['unlink'], ['rename'], ['link'], ['symlink'], ['mkdir'], ['rmdir'],
]

type Handler = (this: Fuse, nativeHandler: unknown, opCode: number, ...args: unknown[]) => void
let sharedHandlers: Handler[] | undefined

/**
 * One handler per opcode for every mount, as fuse-native's _makeHandlerArray makes them for one
 * (without its per-op timer, which dapifs turns off): the addon calls each with the mount as
 * `this`, and the answer goes back through the addon's signal function on the next tick.
 */
function handlers(): Handler[] {
  if (sharedHandlers) return sharedHandlers
  const table = addon as unknown as Record<string, unknown>
  const out: Handler[] = new Array(OPCODES.length)
  for (const [name, makeDefaults] of OPCODES) {
    const op = table[`op_${name}`] as number
    const nativeSignal = table[`fuse_native_signal_${name}`] as ((...args: unknown[]) => void) | undefined
    if (!nativeSignal) continue
    const defaults = makeDefaults?.()
    const method = `_op_${name}`
    out[op] = function (this: Fuse, nativeHandler: unknown, _opCode: number, ...args: unknown[]): void {
      const signal = (err: number, ...values: unknown[]): void => {
        if (defaults) {
          while (values.length > 0 && values[values.length - 1] === undefined) values.pop()
          if (values.length === 0) values = defaults
        }
        process.nextTick(nativeSignal, nativeHandler, err, ...values)
      }
      const self = this as unknown as Record<string, unknown> & { _implemented: Set<number> }
      const fn = self[method] as ((...a: unknown[]) => void) | undefined
      if (!fn || !self._implemented.has(op)) return signal(-1, ...(defaults ?? []))
      fn.call(this, signal, ...args)
    }
  }
  return (sharedHandlers = out)
}

/** Option strings, for each options object they were made from. */
const optionStrings = new WeakMap<Opts, string>()

export default class Fuse extends FuseNative {
  private readonly adoption: Opts['adopt']
  private readonly nativeConfig: Uint32Array
  /** Options fuse-native does not know, for its option string. */
  private readonly moreOptions: string[]

  /**
   * `adopt` may come apart from the other options, so that mounts can share one options object
   * (and its option string).
   */
  constructor(mnt: string, ops: Ops, opts: Opts = {}, adopt: Opts['adopt'] = opts.adopt) {
    super(mnt, ops, opts)
    this.adoption = adopt
    this.moreOptions = [...(opts.noatime ? ['noatime'] : []), ...(opts.negativeTimeout !== undefined ? [`negative_timeout=${opts.negativeTimeout}`] : [])]
    this.nativeConfig = new Uint32Array([opts.workers ?? 4, 0, opts.cacheSymlinks ? 1 : 0, opts.noOpen ? 1 : 0])
  }

  /** The shared handlers, unless the per-op timer is on (fuse-native's own, then). */
  protected override _makeHandlerArray(): unknown[] {
    return (this as unknown as { timeout: number }).timeout ? super._makeHandlerArray() : handlers()
  }

  /** Unmounts `mnt` lazily with fusermount (-uz), without a shell. */
  static override unmount(mnt: string, cb: (err: Error | null) => void): void {
    fusermount(['-uz', mnt], cb)
  }

  /** FUSE_NOTIFY_INVAL_ENTRY for a name in the root, written from libuv's thread pool; cb(0 | -errno). */
  invalidateRootEntry(name: string, cb: (res: number) => void): void {
    addon.fuse_native_invalidate_root_entry(this._thread!, name, cb)
  }

  /** Whether the kernel may hold a root name as absent (lib/native/absent-names.c). */
  mayHoldAbsent(name: string): boolean {
    return addon.fuse_native_may_hold_absent(this._thread!, name)
  }

  /** FUSE_NOTIFY_INVAL_INODE for the root (its attributes and kept listing), the same way. */
  invalidateRootListing(cb: (res: number) => void): void {
    addon.fuse_native_invalidate_root_listing(this._thread!, cb)
  }

  /** [capable, want]: the FUSE_CAP_* bits negotiated at init. */
  connInfo(): [number, number] {
    const [capable, want] = addon.fuse_native_conn_info(this._thread!)
    return [capable, want]
  }

  /**
   * For an adopted connection: 0 if the kernel took FUSE_NOTIFY_RESEND (requests the previous
   * process had read but not answered are sent again), else -errno (kernels before 6.9:
   * -EINVAL); null if not adopted.
   */
  adoptResend(): number | null {
    const res = addon.fuse_native_conn_info(this._thread!)[2]
    return res < 0 ? null : res === 0 ? 0 : -res
  }

  /** fuse-native's option string (-oa,b,...), with the options it does not know; once per options object. */
  protected override _fuseOptions(): string {
    let text = optionStrings.get(this.opts)
    if (text !== undefined) return text
    const own = super._fuseOptions()
    text = this.moreOptions.length === 0 ? own : own ? `${own},${this.moreOptions.join(',')}` : `-o${this.moreOptions.join(',')}`
    optionStrings.set(this.opts, text)
    return text
  }

  /** The mounted session's /dev/fuse descriptor (to hand a dup to the keeper), or -1. */
  sessionFd(): number {
    return this._thread && nativeLayer() ? addon.fuse_native_session_fd(this._thread) : -1
  }

  /**
   * Leaves the connection to whoever holds its descriptor (the keeper, then the next process): no
   * more of its requests are read here; those read already are answered. For a process that is
   * leaving: the mount is neither unmounted nor served any more.
   */
  detach(): void {
    if (this._thread && nativeLayer()) addon.fuse_native_detach(this._thread)
  }

  /**
   * The shared pool (lib/native/pool.c): its threads, the sessions it serves (mounts, and
   * connections unmounted but still held by someone), the requests it has read, and those it is
   * reading or serving now; zeros with fuse-native's prebuilt addon, or before the first mount.
   */
  static pool(): { workers: number; sessions: number; requests: number; inflight: number } {
    if (!nativeLayer()) return { workers: 0, sessions: 0, requests: 0, inflight: 0 }
    const [workers, sessions, requests, inflight] = addon.fuse_native_pool_info()
    return { workers, sessions, requests, inflight }
  }

  // fuse-native's _open, but with the 8th argument, adoption, and our unmount for `force`.
  protected override _open(cb: (err: Error | null) => void): void {
    const mountNow = (adopt?: [fd: number, known: Array<[string, number]>]): void => {
      this._thread = Buffer.alloc(addon.sizeof_fuse_thread_t)
      this._openCallback = cb // called by the init handler, once the kernel has answered
      const args = [this.mnt, this._fuseOptions(), this._thread, this, this._malloc, this._handlers, this._getImplementedArray(), this.nativeConfig] as const
      try {
        if (adopt) addon.fuse_native_mount(...args, ...adopt)
        else addon.fuse_native_mount(...args)
      } catch (err) {
        this._openCallback = null
        cb(err as Error)
      }
    }
    if (this.adoption) {
      // The connection is live at mnt already: no stat, mkdir or unmount of the mountpoint. Its
      // made-up INIT goes through in fuse_native_mount and calls no JS (no ops.init): mounted.
      if (!nativeLayer()) return cb(new Error('adopting a mount needs the native layer (lib/native), not fuse-native\'s prebuilt addon'))
      mountNow([this.adoption.fd, this.adoption.known ?? []])
      if (this._openCallback) {
        this._openCallback = null
        process.nextTick(cb, null)
      }
      return
    }
    const onDirectory = (st: Stats): void => {
      stat(path.join(this.mnt, '..'), (_, parent) => {
        if (parent && parent.dev !== st.dev) return cb(new Error('Mountpoint in use'))
        mountNow()
      })
    }
    const open = (): void => {
      stat(this.mnt, (err, st) => {
        if (err && err.code !== 'ENOENT') return cb(err)
        if (err) {
          if (!this._mkdir) return cb(new Error('Mountpoint does not exist'))
          return mkdir(this.mnt, { recursive: true }, (err) => {
            if (err) return cb(err)
            stat(this.mnt, (err, st) => (err ? cb(err) : onDirectory(st)))
          })
        }
        if (!st.isDirectory()) return cb(new Error('Mountpoint is not a directory'))
        onDirectory(st)
      })
    }
    if (!this._force) return open()
    // A dead daemon's mount answers ENOTCONN: unmount it first (whatever comes of that, mount).
    stat(path.join(this.mnt, 'test'), (err) => {
      if (err && (err.errno === FuseNative.ENOTCONN || err.errno === FuseNative.ENXIO)) return Fuse.unmount(this.mnt, () => open())
      open()
    })
  }

  // fuse-native's _close, with our unmount.
  protected override _close(cb: (err: Error | null) => void): void {
    Fuse.unmount(this.mnt, (err) => {
      if (err) return cb(Object.assign(err, { unmountFailure: true }))
      try {
        addon.fuse_native_unmount(this.mnt, this._thread!)
      } catch (err) {
        return cb(err as Error)
      }
      cb(null)
    })
  }

  // fuse-native's stat handlers, with 19-slot stats (statArray).
  protected override _op_getattr(signal: Signal, path: string): void {
    if (!this.ops.getattr) {
      if (path !== '/') signal(FuseNative.EPERM)
      else signal(0, statArray({ mtime: new Date(0), atime: new Date(0), ctime: new Date(0), mode: 0o40755, size: 4096 }))
      return
    }
    this.ops.getattr(path, (err, st) => (err ? signal(err, statArray()) : signal(0, statArray(st))))
  }

  // (fuse-native's calls getattr: a slip.) Only called when ops.fgetattr exists.
  protected override _op_fgetattr(signal: Signal, path: string, fd: number): void {
    this.ops.fgetattr!(path, fd, (err, st) => (err ? signal(err, statArray()) : signal(0, statArray(st))))
  }

  protected override _op_readdir(signal: Signal, path: string): void {
    this.ops.readdir!(path, (err, names, stats) => (err ? signal(err) : signal(0, names, stats ? stats.map(statArray) : [])))
  }
}

/**
 * A stat as fuse-native's getStatArray makes it (sizes and times in two 32-bit words), with the
 * inode number's high word in a 19th slot (fuse-native.c, populate_stat).
 */
function statArray(st?: Partial<Stat>): Uint32Array {
  const ints = new Uint32Array(19)
  const words = (i: number, n: number): void => {
    ints[i] = n % 4294967296
    ints[i + 1] = Math.floor(n / 4294967296)
  }
  const ms = (t: Date | number | undefined): number => (typeof t === 'number' ? t : t ? t.getTime() : Date.now())
  ints[0] = st?.mode ?? 0
  ints[1] = st?.uid ?? 0
  ints[2] = st?.gid ?? 0
  words(3, st?.size ?? 0)
  ints[5] = st?.dev ?? 0
  ints[6] = st?.nlink || 1
  ints[8] = st?.rdev ?? 0
  ints[9] = st?.blksize ?? 0
  words(10, st?.blocks ?? 0)
  words(12, ms(st?.atime))
  words(14, ms(st?.mtime))
  words(16, ms(st?.ctime))
  const ino = st?.ino ?? 0
  ints[7] = ino % 4294967296
  ints[18] = Math.floor(ino / 4294967296)
  return ints
}

/**
 * Runs fusermount3 (fuse3's; Debian's fuse3 need not provide `fusermount`), or fusermount where
 * there is no fusermount3, with `args` as they are: no shell, so a path is one argument whatever
 * its characters.
 */
export function fusermount(args: string[], cb: (err: Error | null) => void): void {
  const done = (err: Error | null, stderr: string): void => cb(err ? new Error(stderr.trim() || err.message) : null)
  execFile('fusermount3', args, (err, _out, stderr) => {
    if ((err as NodeJS.ErrnoException | null)?.code !== 'ENOENT') return done(err, stderr)
    execFile('fusermount', args, (err, _out, stderr) => done(err, stderr))
  })
}
