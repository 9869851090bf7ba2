// Warning events on pods: what a pod's author hears of an update that the node agent did not
// serve. When a change to a running pod cannot be rendered (over a budget, or unreadable), the
// volume keeps its last good generation and the agent logs it once per cause; but the author
// cannot read the agent's log. They do see `kubectl describe pod`, so the agent records there,
// once per cause, a core/v1 Event of type Warning and reason FailedVolumeUpdate:
//
//   Warning  FailedVolumeUpdate  csi.dapifs.dev, node-1  volume "podinfo" was not updated: renders
//            5,123 bytes, over the budget of 4 KiB (--budget volume=...); it keeps serving its
//            last good files
//
// Posting an event must never slow a publish or a flip, and a pod must not make the agent flood
// the API server, so warn() only queues, and the bounds are simple:
//   1. the same cause on the same pod: posted once in 10 minutes (Daemon.problem already says a
//      cause once until the volume is served again; this covers the pod that flaps, and a pod's
//      several volumes over the same pod budget);
//   2. at most 5 events per pod in 10 minutes, whatever their causes;
//   3. one request in flight for the whole node, and at most 50 events waiting for it: beyond
//      that, new ones are dropped (and the log says how many, once the queue has room again).
// Kubernetes' own recorder aggregates similar events by patching their count; this one only
// creates (its RBAC: create on events), and leaves repeats out instead.
//
// A message is the log line's own text (values quoted as there, control characters escaped:
// logline.ts), on one line and at most 1,024 bytes. A failure to post (no RBAC, the API server
// away) is logged once per distinct failure, and the event is dropped: it is news, not state.

import { LRUCache } from 'lru-cache'
import { CoreV1Api, type CoreV1Event, type KubeConfig } from '@kubernetes/client-node'
import { describeError } from '../source/watch.js'
import type { PodRef } from '../csi/attributes.js'
import { oneLine, type Say } from '../logline.js'
import { DRIVER_NAME } from '../csi/endpoint.js'

export const EVENT_REASON = 'FailedVolumeUpdate'
export const EVENT_COMPONENT = DRIVER_NAME
export const MESSAGE_BYTES = 1024
const REPEAT_MS = 10 * 60_000
const PER_POD = 5
const QUEUE = 50

export interface PodWarning {
  pod: PodRef
  volume: string
  /** What went wrong, as logged (without the generation still served). */
  message: string
  /** What makes two warnings the same (budget.ts causeOf). */
  cause: string
}

export interface PodEventsOptions {
  /** The node, as the events' source host. */
  host: string
  say: Say
  /** Creates the event in its namespace; rejects on failure. */
  post(namespace: string, event: CoreV1Event): Promise<void>
  /** Describes a failure to post, in one line. */
  describe?(e: unknown): string
  now?(): number
}

export class PodEvents {
  /** Per pod (uid), what was posted in the last REPEAT_MS: at most PER_POD entries. */
  private readonly recent = new LRUCache<string, { cause: string; at: number }[]>({ max: 4096 })
  private readonly queue: { namespace: string; event: CoreV1Event }[] = []
  private posting = false
  private stopped = false
  private dropped = 0
  private lastFailure: string | undefined
  private seq = 0

  constructor(private readonly opts: PodEventsOptions) {}

  private now(): number {
    return this.opts.now?.() ?? Date.now()
  }

  /** Queues a Warning event on the pod, within the bounds; never throws, never waits. */
  warn(w: PodWarning): void {
    if (this.stopped) return
    const now = this.now()
    const recent = (this.recent.get(w.pod.uid) ?? []).filter((r) => now - r.at < REPEAT_MS)
    this.recent.set(w.pod.uid, recent)
    if (recent.some((r) => r.cause === w.cause) || recent.length >= PER_POD) return
    if (this.queue.length >= QUEUE) { this.dropped++; return }
    recent.push({ cause: w.cause, at: now })
    this.queue.push({ namespace: w.pod.namespace, event: this.event(w, now) })
    void this.drain()
  }

  /** Posts nothing more; what waits is dropped. */
  stop(): void {
    this.stopped = true
    this.queue.length = 0
  }

  private event(w: PodWarning, now: number): CoreV1Event {
    const at = new Date(now)
    const { namespace, name, uid } = w.pod
    return {
      metadata: { name: eventName(name, now, this.seq++), namespace },
      involvedObject: { apiVersion: 'v1', kind: 'Pod', namespace, name, uid },
      type: 'Warning',
      reason: EVENT_REASON,
      message: eventMessage(w.volume, w.message),
      source: { component: EVENT_COMPONENT, host: this.opts.host },
      firstTimestamp: at,
      lastTimestamp: at,
      count: 1,
    }
  }

  private async drain(): Promise<void> {
    if (this.posting) return
    this.posting = true
    try {
      for (let next = this.queue.shift(); next && !this.stopped; next = this.queue.shift()) {
        try {
          await this.opts.post(next.namespace, next.event)
          this.lastFailure = undefined
        } catch (e) {
          const why = this.opts.describe?.(e) ?? (e as Error).message
          if (why !== this.lastFailure) {
            this.opts.say(`cannot record a Warning event on pod ${next.namespace}/${next.event.involvedObject.name}: ${why} (the agent's ServiceAccount needs create on events: examples/kubernetes/rbac.yaml)`, { level: 'warning' })
          }
          this.lastFailure = why
        }
        if (this.dropped > 0 && this.queue.length < QUEUE) {
          this.opts.say(`${this.dropped} Warning events on pods were not recorded: more than ${QUEUE} were waiting`, { level: 'warning' })
          this.dropped = 0
        }
      }
    } finally {
      this.posting = false
    }
  }
}

/** The event's text: one line, within MESSAGE_BYTES. */
export function eventMessage(volume: string, message: string): string {
  // "volume "v": renders ..." and "volume "v", item "x": renders ...": the volume is said once.
  const named = `volume ${JSON.stringify(volume)}`
  const what = message.startsWith(`${named}: `) || message.startsWith(`${named}, `) ? message.slice(named.length + 2) : message
  return clip(oneLine(`volume ${JSON.stringify(volume)} was not updated: ${what}; it keeps serving its last good files`), MESSAGE_BYTES)
}

/** `text` cut to at most `bytes` of UTF-8, with an ellipsis if it was cut; never inside a character. */
export function clip(text: string, bytes: number): string {
  if (Buffer.byteLength(text) <= bytes) return text
  let out = ''
  let n = 0
  const room = bytes - Buffer.byteLength('…')
  for (const ch of text) {
    const len = Buffer.byteLength(ch)
    if (n + len > room) break
    out += ch
    n += len
  }
  return `${out}…`
}

/**
 * NAME.HEX, as client-go names events (the time in ns, in hex), within a DNS subdomain's 253
 * characters: a pod's name is one, so cut short it only needs no '.' or '-' at its end.
 */
function eventName(pod: string, now: number, seq: number): string {
  const suffix = (BigInt(now) * 1_000_000n + BigInt(seq % 1_000_000)).toString(16)
  const base = pod.slice(0, 253 - 1 - suffix.length).replace(/[.-]+$/, '')
  return `${base}.${suffix}`
}

/** Warning events on the pods of node `host`, posted with the agent's credentials. */
export function podEventsFor(kc: KubeConfig, host: string, say: Say): PodEvents {
  const core = kc.makeApiClient(CoreV1Api)
  return new PodEvents({
    host, say,
    post: async (namespace, body) => { await core.createNamespacedEvent({ namespace, body }) },
    describe: (e) => describeError(e, 'create'),
  })
}
