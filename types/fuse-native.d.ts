// Types for fuse-native 2.2.6 (it ships none) as scripts/fuse-native/ patches it: the parts dapifs uses.
declare module 'fuse-native' {
  type Cb<T = unknown> = (code: number, value?: T) => void
  export interface Stat {
    mtime: Date | number; atime: Date | number; ctime: Date | number
    size: number; mode: number; uid: number; gid: number
    nlink?: number; ino?: number; dev?: number
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
    readdir?(path: string, cb: Cb<string[]>): void
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
    /** The patch's (libfuse 3): the kernel caches symlink targets (FUSE_CAP_CACHE_SYMLINKS). */
    cacheSymlinks?: boolean
    /** The patch's: with no open handler, open answers ENOSYS in C and the kernel stops sending it. */
    noOpen?: boolean
    /** The patch's: at most this many idle libfuse workers (libfuse 3's loop config). */
    maxIdleThreads?: number
    /**
     * The patch's (3): take over the live connection of a /dev/fuse fd whose server died, instead
     * of mounting (mnt is not touched); `known`: [path, ino] pairs of nodes the kernel may hold.
     * The Fuse object owns `fd` from then on.
     */
    adopt?: { fd: number; known?: Array<[string, number]> }
  }
  class Fuse {
    constructor(mnt: string, ops: Ops, opts?: Opts)
    readonly mnt: string
    readonly opts: Opts
    /** fuse-native's own: the mount's native state (the addon's fuse_thread_t). */
    readonly _thread: Buffer
    /** fuse-native's own: the thread-locals it has set up for libfuse's worker threads. */
    readonly _threads: Set<Buffer>
    /** The patch's: FUSE_NOTIFY_INVAL_ENTRY for a name in the root, from libuv's thread pool. */
    invalidateRootEntry(name: string, cb: (res: number) => void): void
    /** The patch's: FUSE_NOTIFY_INVAL_INODE for the inode at a path, from libuv's thread pool. */
    invalidatePath(path: string, cb: (res: number) => void): void
    /** The patch's: [capable, want], the FUSE_CAP_* bits negotiated at init. */
    connInfo(): [number, number]
    /** The patch's (3): the mounted session's /dev/fuse fd, or -1. */
    sessionFd(): number
    /** The patch's (3): for an adopted mount, 0 if the kernel took FUSE_NOTIFY_RESEND, else -errno; null if not adopted. */
    adoptResend(): number | null
    mount(cb: (err: Error | null) => void): void
    unmount(cb: (err: Error | null) => void): void
    static unmount(mnt: string, cb: (err: Error | null) => void): void
    /** The patch's (3): the keeper's client, synchronous; each throws an Error naming the socket. */
    static keeperPut(sock: string, key: string, fd: number): void
    static keeperDrop(sock: string, key: string): void
    static keeperTake(sock: string): Array<{ key: string; fd: number }>
    static closeFd(fd: number): number
    static readonly EPERM: number
    static readonly ENOENT: number
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
