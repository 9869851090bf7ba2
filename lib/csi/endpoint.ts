// The driver's name and the shape of its endpoint: what the node agent checks before anything
// else, without loading the gRPC side (server.ts), which it needs only once its volumes are
// served again (command.ts).

import net from 'node:net'

export const DRIVER_NAME = 'csi.dapifs.dev'

/** `unix:///run/csi.sock` or `/run/csi.sock`: the socket's path. */
export function socketPath(endpoint: string): string | undefined {
  const m = /^unix:\/\/(\/.+)$/.exec(endpoint) ?? /^unix:(\/.+)$/.exec(endpoint) ?? /^(\/.+)$/.exec(endpoint)
  return m ? m[1] : undefined
}

/** Whether something serves the unix socket at `socket` (connects). */
export function answers(socket: string): Promise<boolean> {
  return new Promise((resolve) => {
    const c = net.connect(socket, () => { c.destroy(); resolve(true) })
    c.on('error', () => resolve(false))
  })
}
