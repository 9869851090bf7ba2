// What `dapifs csi --http-endpoint ADDR:PORT` serves, over plain HTTP (off by default; the
// DaemonSet turns it on, on a port of its own):
//
//   /metrics   the metrics (metrics.ts), in the Prometheus text format;
//   /healthz   200 "ok" when every check passes: the CSI socket answers a Probe, the node's pods
//              have been listed and its Node read, and the keeper's connection is open where a
//              keeper is used; else 503, with one line per failing check. The readiness probe.
//   /livez     the same for the checks that a restart of the agent would fix: only that the CSI
//              socket answers (so the event loop turns, and the gRPC server with it). The
//              liveness probe. Not the keeper: an agent restarted while its keeper is away
//              cannot take its volumes back, and unmounts them; the one that runs on keeps
//              serving them, and hands them to the keeper as soon as it is back. Not the
//              watches: a restart does not bring an API server back.
//
// The port may be reachable from the whole cluster: it answers nothing else, and says nothing
// about a pod (no metric names one; a check names the node, the socket and the keeper's socket).
// Requests are small and bounded in time.

import http from 'node:http'
import { InputError } from '../volume/shape.js'
import type { Metrics } from './metrics.js'

export interface Endpoint { host?: string; port: number }

/**
 * `:9810` (every address), `0.0.0.0:9810`, `127.0.0.1:9810`, `[::1]:9810`, `localhost:9810`; port
 * 0 is any free one (the log says which).
 */
export function parseHttpEndpoint(text: string): Endpoint {
  const m = /^(?:\[([0-9A-Fa-f:.]+)\]|([A-Za-z0-9.-]*)):([0-9]{1,5})$/.exec(text)
  const port = m ? Number(m[3]) : NaN
  if (!m || port > 65535) {
    throw new InputError('--http-endpoint', `${JSON.stringify(text)} is not ADDR:PORT (a port up to 65535, after an address or none: :9810, 127.0.0.1:9810, [::1]:9810)`)
  }
  const host = m[1] ?? m[2]
  return host ? { host, port } : { port }
}

export interface Check {
  /** Whether /livez runs it too: a failure that a restart of the agent would fix. */
  live?: boolean
  /** undefined when it passes; else why not, in one line. */
  run(): Promise<string | undefined> | string | undefined
}

export interface HttpOptions {
  metrics: Metrics
  checks: Check[]
}

export class HttpEndpoint {
  private readonly server: http.Server

  constructor(private readonly opts: HttpOptions) {
    this.server = http.createServer((req, res) => void this.answer(req, res))
    this.server.headersTimeout = 5_000
    this.server.requestTimeout = 10_000
    this.server.maxConnections = 64
  }

  /** Listens; rejects (InputError, with the system's `code`) if it cannot. Resolves with the address it listens on. */
  listen(at: Endpoint): Promise<{ address: string; port: number }> {
    return new Promise((resolve, reject) => {
      const failed = (e: NodeJS.ErrnoException): void => {
        reject(Object.assign(new InputError('--http-endpoint', `cannot listen on ${at.host ?? ''}:${at.port}: ${e.code ?? e.message}`), { code: e.code }))
      }
      this.server.once('error', failed)
      this.server.listen({ port: at.port, ...(at.host ? { host: at.host } : {}) }, () => {
        this.server.off('error', failed)
        const a = this.server.address() as { address: string; port: number }
        resolve({ address: a.address, port: a.port })
      })
    })
  }

  stop(): Promise<void> {
    this.server.closeAllConnections()
    return new Promise((resolve) => this.server.close(() => resolve()))
  }

  private async answer(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const send = (status: number, body: string, type = 'text/plain; charset=utf-8'): void => {
      res.writeHead(status, { 'Content-Type': type, 'Cache-Control': 'no-store' })
      res.end(req.method === 'HEAD' ? undefined : body)
    }
    try {
      if (req.method !== 'GET' && req.method !== 'HEAD') return send(405, 'only GET and HEAD\n')
      const where = (req.url ?? '').split('?')[0]
      switch (where) {
        case '/metrics': {
          const { text, contentType } = await this.opts.metrics.scrape()
          return send(200, text, contentType)
        }
        case '/healthz': case '/livez': {
          const checks = where === '/livez' ? this.opts.checks.filter((c) => c.live) : this.opts.checks
          const failing = (await Promise.all(checks.map((c) => c.run()))).filter((r): r is string => r !== undefined)
          return failing.length === 0 ? send(200, 'ok\n') : send(503, failing.map((r) => `${r}\n`).join(''))
        }
        default:
          return send(404, 'not found: /metrics, /healthz or /livez\n')
      }
    } catch (e) {
      send(500, `internal error: ${(e as Error).message.split('\n')[0]}\n`)
    }
  }
}
