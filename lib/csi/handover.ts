// The handover: how a new node agent takes the volumes from an old one that is still serving them
// (a DaemonSet rollout with maxSurge: the new pod starts beside the old), so that readers see no
// pause but the few milliseconds of the handover itself.
//
// The two agents talk on a unix socket of their own, `handover.sock` beside the CSI socket (mode
// 0600: root only, like the keeper's); the keeper takes no part, so that a keeper installed by any
// earlier release serves the handover unchanged. Lines end with "\n".
//   1. The old agent listens on the handover socket while it serves.
//   2. The new agent, as it starts, connects there. From then on the old agent's /healthz says it
//      is being replaced (the pods share the node's network: a probe of the new pod's port
//      reaches the old agent until the new one listens, and must not call the new pod Ready).
//   3. The new agent loads everything it will need (gRPC, the Kubernetes client: a second of
//      this thread that readers must not wait for), then sends "LET GO".
//   4. The old agent lets go (command.ts): refuses new CSI calls (UNAVAILABLE), closes its
//      registration socket, its HTTP port and its CSI socket, waits for the calls it is serving,
//      stops flipping and detaches every mount from its pool (requests read already are
//      answered; the kernel queues the next ones), stops talking to the keeper, closes this
//      socket, and answers "GONE <n>" (n: the volumes it served). It serves nothing from then on
//      and exits 0 at SIGTERM, unmounting nothing.
//   5. The new agent takes the descriptors from the keeper and serves them (Volumes.recover), then
//      listens on the sockets and the port the old one closed. The kernel's requests of the gap
//      wait only for that.
// A SIGTERM to the old agent is the same step 4 (then it exits): an agent connected meanwhile
// hears "GONE" too. The connection closing without "GONE" means the old process died: nothing
// serves the mounts either way, and the new agent goes on.
//
// No handover socket (nothing listens there): no agent is running, or one of a release without
// the handover. The CSI socket tells which (whether it answers): the new agent then waits until
// the old one has stopped, as before the handover existed (waitForOldAgent).

import { chmod, unlink } from 'node:fs/promises'
import { existsSync } from 'node:fs'
import net from 'node:net'
import createDebug from 'debug'
import { answers } from './endpoint.js'

const log = createDebug('dapifs:csi:handover')

/** The old agent's side: the handover socket, while it serves. */
export class HandoverServer {
  private server: net.Server | undefined
  private readonly clients = new Set<net.Socket>()
  private letting: Promise<number> | undefined
  /** Whether a newer agent is connected (about to take the volumes: /healthz fails), or has them. */
  get replaced(): boolean {
    return this.clients.size > 0 || this.letting !== undefined
  }

  /**
   * letGo: stops serving (once), resolving with the volumes it served; asked: called once a newer
   * agent's LET GO has been answered.
   */
  constructor(readonly socket: string, private readonly letGo: () => Promise<number>, private readonly asked?: (volumes: number) => void) {}

  async listen(): Promise<void> {
    // A socket left by an agent that died: nothing listens there (the caller checked first).
    if (existsSync(this.socket)) await unlink(this.socket).catch(() => {})
    const server = (this.server = net.createServer((c) => this.accept(c)))
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject)
      server.listen(this.socket, () => { server.off('error', reject); resolve() })
    })
    await chmod(this.socket, 0o600)
  }

  private accept(c: net.Socket): void {
    this.clients.add(c)
    let buf = ''
    c.setEncoding('utf8')
    c.on('data', (d: string) => {
      buf += d
      if (buf.length > 1024) { c.destroy(); return }
      const nl = buf.indexOf('\n')
      if (nl < 0) return
      const line = buf.slice(0, nl)
      buf = buf.slice(nl + 1)
      if (line === 'LET GO') void this.handOver().then((n) => this.asked?.(n))
      else c.end(`ERR unknown request ${JSON.stringify(line.slice(0, 40))} (LET GO)\n`)
    })
    c.on('error', (e) => log('client: %s', e.message))
    c.on('close', () => this.clients.delete(c))
  }

  /** Lets go (once), then tells every connected agent: "GONE <volumes>". */
  handOver(): Promise<number> {
    this.letting ??= (async () => {
      const n = await this.letGo()
      await this.close()
      for (const c of this.clients) c.end(`GONE ${n}\n`)
      return n
    })()
    return this.letting
  }

  /** Stops listening, and removes the socket so that the next agent can bind it. */
  async close(): Promise<void> {
    const server = this.server
    this.server = undefined
    if (!server) return
    server.close()
    await unlink(this.socket).catch(() => {})
  }
}

export type Outcome =
  /** The old agent let go (it said GONE). */
  | 'handed'
  /** The old agent's connection closed without a GONE: it died, and serves nothing. */
  | 'gone'

/** The new agent's side: a connection to the old agent's handover socket. */
export class HandoverClient {
  private readonly outcome: Promise<Outcome>
  private said: string | undefined

  private constructor(private readonly conn: net.Socket) {
    this.outcome = new Promise((resolve) => {
      let buf = ''
      conn.setEncoding('utf8')
      conn.on('data', (d: string) => {
        buf += d
        const nl = buf.indexOf('\n')
        if (nl >= 0 && this.said === undefined) this.said = buf.slice(0, nl)
        if (this.said?.startsWith('GONE')) resolve('handed')
      })
      conn.on('error', (e) => log('%s', e.message))
      conn.on('close', () => resolve(this.said?.startsWith('GONE') ? 'handed' : 'gone'))
    })
  }

  /** Connects to the agent serving now; undefined if none listens there. */
  static connect(socket: string): Promise<HandoverClient | undefined> {
    return new Promise((resolve) => {
      const c = net.connect(socket)
      c.once('connect', () => resolve(new HandoverClient(c)))
      c.once('error', (e: NodeJS.ErrnoException) => { log('%s: %s', socket, e.code ?? e.message); resolve(undefined) })
    })
  }

  /** The old agent's last line (GONE and the number of volumes, or an ERR line), if any. */
  get answer(): string | undefined {
    return this.said
  }

  /** Asks the old agent to let go; resolves once it has (or has died). */
  letGo(): Promise<Outcome> {
    if (!this.conn.destroyed) this.conn.write('LET GO\n')
    return this.outcome.finally(() => this.conn.destroy())
  }
}

/**
 * An agent of a release without the handover serves the CSI socket: waits until it has stopped
 * (its SIGTERM: in a rollout with maxSurge, once the new pod is Ready). It closes its CSI socket
 * before it detaches its mounts, which takes it milliseconds: `settleMs` more are left for that.
 * Resolves at once if nothing serves the socket.
 */
export async function waitForOldAgent(csiSocket: string, said: () => void, settleMs = 1000): Promise<boolean> {
  if (!(await answers(csiSocket))) return false
  said()
  while (await answers(csiSocket)) await new Promise((resolve) => setTimeout(resolve, 100))
  await new Promise((resolve) => setTimeout(resolve, settleMs))
  return true
}
