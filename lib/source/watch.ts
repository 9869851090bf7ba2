// Keeps a field-selected collection (the pods on a node), or one named object (a pod, a node),
// current from the API server, for as long as it runs:
//
//   1. list, with the field selector, to get the objects and a resourceVersion;
//   2. watch from that resourceVersion (with bookmarks, and a server-side timeout), passing on
//      every ADDED, MODIFIED and DELETED;
//   3. when the watch ends, watch again from the last resourceVersion seen, at once if it ended
//      cleanly, after a backoff (100 ms doubling to 5 s) if it failed. Nothing is lost across a
//      reconnect: the server replays what happened after that version;
//   4. when that version is too old (410 Gone, as an HTTP status or an ERROR event), list again.
//
// It never stops by itself: every failure (the server unreachable, a 500, a list that fails,
// a connection that goes silent) is reported and retried. stop() cancels whatever is pending,
// including a backoff, so nothing is left running after it. This is client-node's informer
// without its two faults: it stops for good on some errors, and a stop() during its backoff
// leaks one watch. An observer (the node agent's metrics) hears each change, each time the watch
// ends and is made again, and whether it is established.

import { Watch, type KubeConfig } from '@kubernetes/client-node'
import createDebug from 'debug'

const log = createDebug('dapifs:source:watch')

export interface ListResult { items: unknown[]; resourceVersion: string }

export interface CollectionTarget {
  /** For messages: `pods on node n1`. */
  what: string
  /** The collection's path: `/api/v1/pods`. */
  path: string
  /** `spec.nodeName=n1`: the same for the list and the watch. */
  fieldSelector: string
  /** Lists with that field selector. */
  list(): Promise<ListResult>
}

interface Reporting {
  /** A failure, already retried. */
  problem(message: string, err: unknown): void
  /** A recovery after a problem. */
  recovered?(): void
}

export interface CollectionSink extends Reporting {
  /** Every object there is (raw JSON), after each list: what was not listed is gone. */
  listed(items: unknown[]): void
  changed(obj: unknown, how: 'added' | 'modified' | 'deleted'): void
}

export interface WatchTarget {
  /** For messages: `pod shop/web-1`. */
  what: string
  /** The collection's path: `/api/v1/namespaces/shop/pods`. */
  path: string
  name: string
  list(): Promise<ListResult>
}

export interface WatchSink extends Reporting {
  /** The object as it now is (raw JSON), or undefined when it does not exist. */
  object(obj: unknown | undefined, how: 'listed' | 'added' | 'modified' | 'deleted'): void
}

/** What the node agent's metrics hear (observe/metrics.ts); nothing here knows them. */
export interface WatchObserver {
  /** An ADDED, MODIFIED or DELETED event arrived. */
  event(): void
  /** The watch (or its list) ended or failed, and will be started again. */
  restarted(): void
  /** Whether a watch request is established (the server answered it, and it has not ended). */
  up(established: boolean): void
}

const BACKOFF_MIN_MS = 100
const BACKOFF_MAX_MS = 5_000
/** The server ends each watch after about this long; silence beyond it means a dead connection. */
const WATCH_SECONDS = 300

export class ListWatch {
  private rv: string | undefined
  private stopped = true
  private backoff = BACKOFF_MIN_MS
  private timer: NodeJS.Timeout | undefined
  private idle: NodeJS.Timeout | undefined
  private abort: AbortController | undefined
  private failing = false
  /** Incremented per attempt: callbacks of an attempt that was given up are ignored. */
  private attempt = 0

  constructor(private readonly kc: KubeConfig, private readonly target: CollectionTarget, private readonly sink: CollectionSink,
    private readonly observer?: WatchObserver) {}

  start(): void {
    this.stopped = false
    void this.list()
  }

  stop(): void {
    this.stopped = true
    this.attempt++
    clearTimeout(this.timer)
    clearTimeout(this.idle)
    this.abort?.abort()
    this.abort = undefined
    this.observer?.up(false)
  }

  /** The current attempt ended: it will be made again. */
  private ended(): void {
    this.observer?.up(false)
    this.observer?.restarted()
  }

  private later(fn: () => void, ms: number): void {
    clearTimeout(this.timer)
    this.timer = setTimeout(fn, ms)
  }

  private fail(message: string, err: unknown, then: () => void): void {
    this.ended()
    this.failing = true
    // The watch retries whatever failed; an unreachable server is the case worth saying so for.
    this.sink.problem(`${this.target.what}: ${message}${unreachable(err) ? '; retrying' : ''}`, err)
    const wait = this.backoff
    this.backoff = Math.min(this.backoff * 2, BACKOFF_MAX_MS)
    log('%s: retrying in %d ms', this.target.what, wait)
    this.later(then, wait)
  }

  private ok(): void {
    this.backoff = BACKOFF_MIN_MS
    if (this.failing) {
      this.failing = false
      this.sink.recovered?.()
    }
  }

  private async list(): Promise<void> {
    if (this.stopped) return
    const attempt = ++this.attempt
    let result: ListResult
    try {
      result = await this.target.list()
    } catch (e) {
      if (attempt !== this.attempt) return
      this.fail(describeError(e, 'list'), e, () => void this.list())
      return
    }
    if (attempt !== this.attempt) return
    this.ok()
    this.rv = result.resourceVersion
    this.sink.listed(result.items)
    void this.watch()
  }

  private async watch(): Promise<void> {
    if (this.stopped) return
    const attempt = ++this.attempt
    const params = {
      fieldSelector: this.target.fieldSelector,
      resourceVersion: this.rv,
      allowWatchBookmarks: true,
      timeoutSeconds: WATCH_SECONDS,
    }
    const current = (): boolean => attempt === this.attempt
    let gotData = false
    const resetIdle = (): void => {
      clearTimeout(this.idle)
      this.idle = setTimeout(() => {
        if (!current()) return
        log('%s: watch silent for too long; reconnecting', this.target.what)
        this.ended()
        this.attempt++
        this.abort?.abort()
        void this.watch()
      }, (WATCH_SECONDS + 30) * 1000)
    }
    resetIdle()
    const onEvent = (type: string, obj: unknown): void => {
      if (!current()) return
      resetIdle()
      if (!gotData) { gotData = true; this.ok() }
      const rv = (obj as { metadata?: { resourceVersion?: string } })?.metadata?.resourceVersion
      switch (type) {
        case 'ADDED': case 'MODIFIED': case 'DELETED':
          this.observer?.event()
          if (rv) this.rv = rv
          this.sink.changed(obj, type === 'ADDED' ? 'added' : type === 'MODIFIED' ? 'modified' : 'deleted')
          break
        case 'BOOKMARK':
          if (rv) this.rv = rv
          break
        case 'ERROR': {
          const code = (obj as { code?: number })?.code
          log('%s: watch ERROR event %j', this.target.what, obj)
          if (code === 410) {
            this.sink.problem(`${this.target.what}: resourceVersion ${this.rv} is too old (410 Gone); listing again`, obj)
            this.rv = undefined
          }
          break
        }
      }
    }
    const onDone = (err: unknown): void => {
      if (!current()) return
      clearTimeout(this.idle)
      this.abort = undefined
      const status = (err as { statusCode?: number } | null)?.statusCode
      if (this.rv === undefined || status === 410) {
        this.ended()
        if (status === 410) this.sink.problem(`${this.target.what}: resourceVersion too old (410 Gone); listing again`, err)
        this.later(() => void this.list(), 0)
      } else if (err && !isAbort(err)) {
        this.fail(describeError(err, 'watch'), err, () => void this.watch())
      } else {
        this.ended()
        this.later(() => void this.watch(), 0)
      }
    }
    try {
      const controller = await new Watch(this.kc).watch(this.target.path, params, onEvent, onDone)
      if (!current()) controller.abort()
      else {
        this.abort = controller
        this.observer?.up(true)
      }
    } catch (e) {
      onDone(e)
    }
  }
}

/** One object, by name: its absence is news too. */
export class NamedWatch extends ListWatch {
  constructor(kc: KubeConfig, target: WatchTarget, sink: WatchSink, observer?: WatchObserver) {
    const { name } = target
    super(kc, { what: target.what, path: target.path, fieldSelector: `metadata.name=${name}`, list: target.list }, {
      listed: (items) => sink.object(items.find((o) => nameOf(o) === name), 'listed'),
      changed: (obj, how) => { if (nameOf(obj) === name) sink.object(how === 'deleted' ? undefined : obj, how) },
      problem: (m, e) => sink.problem(m, e),
      ...(sink.recovered ? { recovered: () => sink.recovered!() } : {}),
    }, observer)
  }
}

function nameOf(o: unknown): string | undefined {
  return (o as { metadata?: { name?: string } })?.metadata?.name
}

function isAbort(e: unknown): boolean {
  return (e as { name?: string })?.name === 'AbortError'
}

/** One line for an API failure: the status and its meaning, or the network error. */
export function describeError(e: unknown, what: string): string {
  const err = e as { code?: unknown; statusCode?: number; body?: unknown; message?: string; type?: string; errno?: string }
  const status = typeof err?.code === 'number' ? err.code : err?.statusCode
  if (typeof status === 'number') {
    let reason = ''
    try {
      const body = typeof err.body === 'string' ? JSON.parse(err.body) : err.body
      if (body && typeof body.message === 'string') reason = `: ${body.message}`
    } catch { /* not JSON */ }
    const meaning = status === 401 ? 'unauthorized: the credentials were refused'
      : status === 403 ? 'forbidden: these credentials may not do this'
        : status === 404 ? 'not found'
          : status >= 500 ? 'server error' : 'request failed'
    return `${what} failed with HTTP ${status} (${meaning})${reason}`
  }
  const code = unreachable(e)
  if (code) return `API server unreachable (${code})`
  return `${what} failed: ${String(err?.message ?? e).split('\n')[0]}`
}

/** The network error's code if the API server could not be reached, else undefined. */
function unreachable(e: unknown): string | undefined {
  const err = e as { code?: unknown; errno?: string } | undefined
  const code = typeof err?.code === 'string' ? err.code : err?.errno
  return code === 'ECONNREFUSED' || code === 'ECONNRESET' || code === 'ENOTFOUND' || code === 'EHOSTUNREACH' || code === 'ETIMEDOUT' ? code : undefined
}
