// The `items` of a CSI volume are YAML that a pod's author wrote, up to the items-text budget
// (budget.ts). Parsing it is the slowest step of a publish, several times slower before V8 has
// compiled the parser, and it would run on the thread that answers every pod's FUSE requests. So
// the driver parses it in a worker thread of its own: the main thread only sends the text and gets
// the value back (structured clone), and a parse that runs past a time limit ends the worker
// (a new one starts with the next parse) and refuses the volume. Where no worker can start, it
// parses in this thread, as `dapifs render` does.

import { Worker } from 'node:worker_threads'
import createDebug from 'debug'
import { InputError } from '../volume/shape.js'
import { parseAttribute } from './attributes.js'

const log = createDebug('dapifs:csi:parser')

/** Far longer than any text within the budget takes (milliseconds), so only a runaway hits it. */
export const PARSE_LIMIT_MS = 5_000

interface Reply { id: number; value?: unknown; where?: string; problem?: string }

/** The worker's module: its own file beside this one, compiled or (in tests) as source. */
function workerUrl(): URL {
  return new URL(import.meta.url.endsWith('.ts') ? './parser-worker.ts' : './parser-worker.js', import.meta.url)
}

export class AttributeParser {
  private worker: Worker | undefined
  private broken = false
  private next = 0
  private readonly pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void; timer: NodeJS.Timeout }>()

  /** One YAML or JSON value of an attribute's text (parseAttribute), parsed off this thread. */
  parse(text: string, where: string): Promise<unknown> {
    const worker = this.start()
    if (!worker) return Promise.resolve().then(() => parseAttribute(text, where))
    const id = this.next++
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id)
        reject(new InputError(where, `took over ${PARSE_LIMIT_MS / 1000} s to parse; refused`))
        this.end()
      }, PARSE_LIMIT_MS)
      this.pending.set(id, { resolve, reject, timer })
      worker.postMessage({ id, text, where })
    })
  }

  private start(): Worker | undefined {
    if (this.worker || this.broken) return this.worker
    try {
      const w = new Worker(workerUrl())
      w.unref() // it must never keep the agent alive
      w.on('message', (r: Reply) => {
        const p = this.pending.get(r.id)
        if (!p) return
        this.pending.delete(r.id)
        clearTimeout(p.timer)
        if (r.problem !== undefined) p.reject(new InputError(r.where ?? '', r.problem))
        else p.resolve(r.value)
      })
      w.on('error', (e) => {
        log('the parser worker failed: %s', e.message)
        if (this.worker === w) this.worker = undefined
        for (const [id, p] of this.pending) { clearTimeout(p.timer); this.pending.delete(id); p.reject(e) }
      })
      this.worker = w
    } catch (e) {
      log('no parser worker (%s): parsing in this thread', (e as Error).message)
      this.broken = true
    }
    return this.worker
  }

  private end(): void {
    void this.worker?.terminate()
    this.worker = undefined
  }

  stop(): void {
    for (const [id, p] of this.pending) { clearTimeout(p.timer); this.pending.delete(id); p.reject(new Error('the driver is stopping')) }
    this.end()
  }
}
