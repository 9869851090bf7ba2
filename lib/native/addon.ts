// Which addon fuse-native loaded, and what ours offers beyond fuse-native's.
//
// fuse-native's index.js loads its addon with node-gyp-build, which prefers a build in
// fuse-native's own build/Release to the prebuilds it ships. build.mjs (npm's postinstall) puts
// ours there: fuse-native's addon ported to libfuse 3's low-level API (fuse-native.c). When that
// build failed, what loads is fuse-native's prebuilt libfuse 2 addon, and dapifs runs degraded
// (docs/cli.md, "Installing"). Loading it here the same way (the same loader, from the same folder)
// gives the same module: the one fuse-native's JS drives.

import { createRequire } from 'node:module'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

/** What fuse-native.c exports beyond fuse-native's own addon (each documented there). */
export interface Native {
  /** Set by our build only. */
  dapifs_native?: number
  sizeof_fuse_thread_t: number
  fuse_native_mount(mnt: string, opts: string, thread: Buffer, ctx: object, malloc: (size: number) => Buffer,
    handlers: unknown[], implemented: Uint32Array, config: Uint32Array, adoptFd?: number, known?: Array<[string, number]>): void
  fuse_native_unmount(mnt: string, thread: Buffer): void
  fuse_native_invalidate_root_entry(thread: Buffer, name: string, cb: (res: number) => void): void
  fuse_native_invalidate_root_listing(thread: Buffer, cb: (res: number) => void): void
  fuse_native_may_hold_absent(thread: Buffer, name: string): boolean
  fuse_native_conn_info(thread: Buffer): [number, number, number]
  fuse_native_session_fd(thread: Buffer): number
  fuse_native_detach(thread: Buffer): void
  fuse_native_pool_info(): [workers: number, sessions: number, requests: number, inflight: number]
  fuse_native_keeper_put(sock: string, key: string, fd: number): void
  fuse_native_keeper_drop(sock: string, key: string): void
  fuse_native_keeper_take(sock: string): Array<{ key: string; fd: number }>
  fuse_native_vfs_steps(steps: Array<[number, string, string | undefined, number]>, cb: (errno: number, index: number) => void): void
}

const dir = path.dirname(createRequire(import.meta.url).resolve('fuse-native/package.json'))

/** fuse-native's addon, as its index.js loads it. */
export const addon = createRequire(path.join(dir, 'index.js'))('node-gyp-build')(dir) as Native

/**
 * Whether the addon is ours (lib/native), built for libfuse 3: the kernel caches links and skips
 * opens, the rename of ..data never fails a reader, workers' thread-locals are recycled, the
 * kernel can be told to forget, and a live mount can be handed to another process (the keeper)
 * and taken over. Otherwise it is fuse-native's prebuilt libfuse 2 addon.
 */
export function nativeLayer(): boolean {
  return addon.dapifs_native !== undefined
}

/** Builds the native layer (npm's postinstall runs it; build.mjs is not compiled, so from lib/). */
export const nativeBuild = fileURLToPath(new URL('../../lib/native/build.mjs', import.meta.url))
