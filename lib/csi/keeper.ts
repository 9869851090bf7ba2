// The node agent's side of the keeper (lib/keeper/keeper.c): the process that holds a duplicate
// of each mount's /dev/fuse descriptor, so that the mounts outlive the agent.
//
// The agent puts each mount's descriptor there when it mounts, drops it when it unmounts, and
// takes them all back when it starts. It also keeps one connection open that says AGENT: while
// it is open the keeper knows the mounts are served. If the keeper itself restarts, that
// connection breaks; the agent connects again and puts every descriptor back (`reconnected`).
//
// The calls that pass descriptors are the native layer's (Node cannot send one over a unix socket)
// and synchronous: the keeper answers each at once, from the same machine (native/keeper-client).

import net from 'node:net'
import createDebug from 'debug'
import { keeperDrop, keeperPut, keeperTake } from '../native/keeper-client.js'
import type { Say } from '../logline.js'

const log = createDebug('dapifs:keeper')

const RETRY_MS = 1000

export interface KeeperOptions {
  say: Say
  /** Called when the AGENT connection is back after the keeper was away: put everything again. */
  reconnected: () => void
}

export class Keeper {
  private agent: net.Socket | undefined
  private retry: NodeJS.Timeout | undefined
  private closed = false
  private lastProblem: string | undefined
  private everConnected = false

  constructor(readonly socket: string, private readonly opts: KeeperOptions) {}

  /**
   * Takes every descriptor the keeper holds, by key (target path); none if it is not there (said
   * by start(), which comes after the flags are all checked).
   */
  take(): Map<string, number> {
    try {
      return new Map(keeperTake(this.socket).map(({ key, fd }) => [key, fd] as const))
    } catch (e) {
      log('take: %s', (e as Error).message)
      return new Map()
    }
  }

  /** Whether the keeper now holds a duplicate of `fd` for `key`. */
  put(key: string, fd: number): boolean {
    try {
      keeperPut(this.socket, key, fd)
      this.lastProblem = undefined
      return true
    } catch (e) {
      this.problem((e as Error).message)
      return false
    }
  }

  drop(key: string): void {
    try {
      keeperDrop(this.socket, key)
    } catch (e) {
      this.problem((e as Error).message)
    }
  }

  /** Whether the AGENT connection is open. */
  get connected(): boolean {
    return this.agent !== undefined
  }

  /** Opens the AGENT connection, and opens it again whenever it breaks. */
  start(): Promise<void> {
    return new Promise((resolve) => {
      const connect = (): void => {
        if (this.closed) return resolve()
        const s = net.connect(this.socket)
        let up = false
        s.on('connect', () => {
          s.write('AGENT\n')
          up = true
          this.agent = s
          if (this.everConnected || this.lastProblem !== undefined) this.opts.say(`the keeper at ${this.socket} answers: handing it every mount`)
          this.everConnected = true
          this.lastProblem = undefined
          this.opts.reconnected()
          resolve()
        })
        s.on('data', () => {}) // "OK"
        s.on('error', (e) => { log('%s: %s', this.socket, e.message); if (!up) this.problem(`${this.socket}: ${(e as NodeJS.ErrnoException).code ?? e.message}`) })
        s.on('close', () => {
          if (this.agent === s) this.agent = undefined
          if (up && !this.closed) this.problem(`${this.socket}: the connection closed (the keeper stopped?)`)
          if (!up) resolve()
          if (!this.closed) this.retry = setTimeout(connect, RETRY_MS)
        })
      }
      connect()
    })
  }

  stop(): void {
    this.closed = true
    clearTimeout(this.retry)
    this.agent?.destroy()
  }

  private problem(message: string): void {
    if (message === this.lastProblem) return
    this.lastProblem = message
    this.opts.say(`keeper: ${message}; until it is back, mounts made now do not survive a restart of this process`, { level: 'warning' })
  }
}
