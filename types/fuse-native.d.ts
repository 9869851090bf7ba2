// Types for fuse-native 2.2.6 as published (it ships none): the parts dapifs uses, including the
// internals that lib/native/fuse.ts overrides (which is why package.json pins that version).
declare module 'fuse-native' {
  type Cb<T = unknown> = (code: number, value?: T) => void
  export interface Stat {
    mtime: Date | number; atime: Date | number; ctime: Date | number
    size: number; mode: number; uid: number; gid: number
    nlink?: number; ino?: number; dev?: number; rdev?: number; blksize?: number; blocks?: number
  }
  export interface Statfs {
    bsize: number; frsize: number; blocks: number; bfree: number; bavail: number
    files: number; ffree: number; favail: number; fsid: number; flag: number; namemax: number
  }
  export interface Ops {
    init?(cb: (code: number) => void): void
    access?(path: string, mode: number, cb: (code: number) => void): void
    statfs?(path: string, cb: Cb<Statfs>): void
    getattr?(path: string, cb: Cb<Stat>): void
    fgetattr?(path: string, fd: number, cb: Cb<Stat>): void
    readdir?(path: string, cb: (code: number, names?: string[], stats?: Stat[]) => void): void
    readlink?(path: string, cb: Cb<string>): void
    open?(path: string, flags: number, cb: Cb<number>): void
    opendir?(path: string, flags: number, cb: Cb<number>): void
    read?(path: string, fd: number, buf: Buffer, len: number, pos: number, cb: (bytesOrErr: number) => void): void
    release?(path: string, fd: number, cb: (code: number) => void): void
    releasedir?(path: string, fd: number, cb: (code: number) => void): void
    getxattr?(path: string, name: string, position: number, cb: Cb<Buffer | null>): void
    listxattr?(path: string, cb: Cb<string[]>): void
    [op: string]: ((...args: any[]) => void) | undefined
  }
  export interface Opts {
    debug?: boolean; force?: boolean; mkdir?: boolean; autoUnmount?: boolean
    allowOther?: boolean; defaultPermissions?: boolean; kernelCache?: boolean; autoCache?: boolean
    entryTimeout?: number | string; attrTimeout?: number | string
    fsname?: string; subtype?: string; maxRead?: number
    timeout?: number | false
  }
  /** How fuse-native's handlers answer its addon: an error code (0, or -errno), then values. */
  export type Signal = (code: number, ...values: unknown[]) => void
  class Fuse {
    constructor(mnt: string, ops: Ops, opts?: Opts)
    /** The absolute mountpoint. */
    readonly mnt: string
    readonly ops: Ops
    readonly opts: Opts
    mount(cb: (err: Error | null) => void): void
    unmount(cb: (err: Error | null) => void): void
    /** Runs `fusermount -uz MNT` through a shell. */
    static unmount(mnt: string, cb: (err: Error | null) => void): void

    // Internals (fuse-native's index.js).
    /** The mount's native state (the addon's fuse_thread_t), made by _open. */
    protected _thread: Buffer | null
    /** The thread-locals the addon has set up for libfuse's worker threads. */
    readonly _threads: Set<Buffer>
    protected readonly _force: boolean
    protected readonly _mkdir: boolean
    /** The init handler calls it back (mount's callback) once the kernel has answered. */
    protected _openCallback: ((err: Error | null) => void) | null
    /** Allocates a worker's thread-locals for the addon (called from C). */
    protected _malloc(size: number): Buffer
    /** One JS function per opcode, which the addon calls with a request. */
    protected readonly _handlers: unknown[]
    /** Makes _handlers (in the constructor). */
    protected _makeHandlerArray(): unknown[]
    /** The options as one "-oa,b,c" string. */
    protected _fuseOptions(): string
    /** A Uint32Array: 1 for each opcode the ops implement. */
    protected _getImplementedArray(): Uint32Array
    /** Nanoresource's open and close: mount() and unmount() call them. */
    protected _open(cb: (err: Error | null) => void): void
    protected _close(cb: (err: Error | null) => void): void
    protected _op_getattr(signal: Signal, path: string): void
    protected _op_fgetattr(signal: Signal, path: string, fd: number): void
    protected _op_readdir(signal: Signal, path: string): void

    static readonly EPERM: number
    static readonly ENOENT: number
    static readonly ENXIO: number
    static readonly EIO: number
    static readonly EBADF: number
    static readonly EACCES: number
    static readonly EEXIST: number
    static readonly ENOTDIR: number
    static readonly EISDIR: number
    static readonly EINVAL: number
    static readonly EROFS: number
    static readonly ENOSYS: number
    static readonly ENODATA: number
    static readonly ENOTCONN: number
  }
  export default Fuse
}
