// The keeper's client (keeper-client.c): its calls, added to the addon's exports.

#ifndef DAPIFS_KEEPER_CLIENT_H
#define DAPIFS_KEEPER_CLIENT_H

#include <node_api.h>

// Exports fuse_native_keeper_put(sock, key, fd), fuse_native_keeper_drop(sock, key) and
// fuse_native_keeper_take(sock) -> [{key, fd}, ...].
void keeper_client_export (napi_env env, napi_value exports);

#endif
