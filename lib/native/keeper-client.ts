// The keeper's client (keeper-client.c): puts a mount's /dev/fuse descriptor in the keeper
// (lib/keeper/keeper.c), drops it, or takes them all back. In C because Node cannot send or
// receive a descriptor over a unix socket. Each call is synchronous (the keeper answers at once,
// from the same machine) and throws an Error naming the socket when it fails.

import { addon, nativeLayer } from './addon.js'

function native(): typeof addon {
  if (!nativeLayer()) throw new Error('the keeper\'s client is in the native layer (lib/native), not in fuse-native\'s prebuilt addon')
  return addon
}

/** The keeper holds a duplicate of `fd` under `key` (a target path), replacing any before. */
export function keeperPut(socket: string, key: string, fd: number): void {
  native().fuse_native_keeper_put(socket, key, fd)
}

/** The keeper closes what it holds under `key`, if anything. */
export function keeperDrop(socket: string, key: string): void {
  native().fuse_native_keeper_drop(socket, key)
}

/** A duplicate (close-on-exec) of every descriptor the keeper holds, with its key. */
export function keeperTake(socket: string): Array<{ key: string; fd: number }> {
  return native().fuse_native_keeper_take(socket)
}
