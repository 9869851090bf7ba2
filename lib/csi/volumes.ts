// The volumes published on this node: one dapifs mount (a Daemon) per target path, each fed by
// the node's one pod watch.
//
// Publish, for a target:
//   1. read the request (attributes.ts); bad items are INVALID_ARGUMENT, with the line
//      `dapifs render` gives;
//   2. the same volume already at that target is a success that changes nothing; another one is
//      ALREADY_EXISTS;
//   3. wait for the pod in the node's watch, until just before the call's deadline (UNAVAILABLE
//      then, which the kubelet retries); a pod of that name with another uid is refused
//      (FAILED_PRECONDITION), after a short grace in case the watch is behind the kubelet;
//   4. render the pod's files (a pod they cannot be made from is INVALID_ARGUMENT), create the
//      target, clear a stale mount there, mount, and only then answer: a reader gets the files.
// Unpublish, for a target: abort a publish still waiting there, unmount, remove the directory;
// a target that is already gone is a success. Calls for one target run one at a time, in the
// order they came; calls for different targets run side by side.
//
// Each change of a pod re-renders that pod's volumes only; a change of the node's allocatable
// or labels re-renders all of them. A Daemon flips only when its files change.

import { mkdir, rmdir } from 'node:fs/promises'
import path from 'node:path'
import createDebug from 'debug'
import { machineAllocatable } from '../volume/allocatable.js'
import { Daemon } from '../fs/daemon.js'
import { lazyUnmount, mounts, prepareMountpoint } from '../fs/mountpoint.js'
import { withNode, type Pod } from '../volume/pod.js'
import { InputError } from '../volume/shape.js'
import type { NodeSource } from '../source/node.js'
import { readVolumeContext, volumeNameOf, type PodRef, type VolumeRequest } from './attributes.js'

const log = createDebug('dapifs:csi:volumes')

export type Code = 'INVALID_ARGUMENT' | 'NOT_FOUND' | 'ALREADY_EXISTS' | 'FAILED_PRECONDITION' | 'UNAVAILABLE' | 'ABORTED' | 'INTERNAL'

/** An answer other than OK, with its gRPC code. */
export class CsiError extends Error {
  constructor(readonly code: Code, message: string) {
    super(message)
  }
}

export interface PublishRequest {
  volume_id: string
  target_path: string
  volume_context: Record<string, string>
  volume_capability?: { block?: unknown; mount?: unknown } | null
}

export interface VolumesOptions {
  say: (line: string) => void
  /** Whether items may use the extensions (extensions.ts); `dapifs csi --no-extensions` refuses them. */
  extensions: boolean
  allowOther: boolean
  /** How long a pod of the right name but another uid may be a watch that is behind. */
  uidGraceMs?: number
}

interface Published {
  volumeId: string
  target: string
  request: VolumeRequest
  daemon: Daemon
}

const UNMOUNT_WAIT_MS = 3000

export class Volumes {
  private readonly byTarget = new Map<string, Published>()
  private readonly byUid = new Map<string, Set<Published>>()
  /** The tail of each target's queue of calls. */
  private readonly queues = new Map<string, Promise<unknown>>()
  private readonly waiting = new Map<string, AbortController>()
  private readonly fallback = machineAllocatable()
  private readonly stopListening: () => void

  constructor(private readonly source: NodeSource, private readonly opts: VolumesOptions) {
    this.stopListening = source.listen((uid) => this.changed(uid))
  }

  get size(): number {
    return this.byTarget.size
  }

  /** Runs calls for one target in order. */
  private serial<T>(target: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.queues.get(target) ?? Promise.resolve()
    const next = prev.catch(() => {}).then(fn)
    const tail = next.catch(() => {})
    this.queues.set(target, tail)
    void tail.then(() => { if (this.queues.get(target) === tail) this.queues.delete(target) })
    return next
  }

  async publish(req: PublishRequest, deadline: number): Promise<void> {
    const target = checkTarget(req.target_path)
    if (!req.volume_id) throw new CsiError('INVALID_ARGUMENT', 'volume_id: is required')
    if (req.volume_capability?.block) throw new CsiError('INVALID_ARGUMENT', 'volume_capability: dapifs volumes are filesystems, not block devices')
    const name = volumeNameOf(target, req.volume_id)
    let request: VolumeRequest
    try {
      request = readVolumeContext(req.volume_context ?? {}, name, this.opts.extensions ? 'allowed' : 'refused')
    } catch (e) {
      throw invalid(e)
    }
    // An unpublish that comes while this publish waits (its turn, or the pod) aborts it.
    const abort = new AbortController()
    this.waiting.set(target, abort)
    return this.serial(target, async () => {
      try {
        const existing = this.byTarget.get(target)
        if (existing) {
          if (existing.volumeId === req.volume_id && existing.request.key === request.key) return
          throw new CsiError('ALREADY_EXISTS', `${target}: another volume is published there (${existing.volumeId}, pod ${podName(existing.request.pod)})`)
        }
        const pod = await this.podFor(request.pod, deadline, abort.signal)
        await this.mount(req.volume_id, target, request, pod)
      } finally {
        if (this.waiting.get(target) === abort) this.waiting.delete(target)
      }
    })
  }

  private async mount(volumeId: string, target: string, request: VolumeRequest, pod: Pod): Promise<void> {
    const who = `pod ${podName(request.pod)}, volume ${JSON.stringify(request.volume.name)}`
    const daemon = new Daemon({
      mountpoint: target,
      settings: { items: request.volume, allocatable: this.fallback },
      say: (line) => this.opts.say(`${who}: ${line}`),
      allowOther: this.opts.allowOther,
    })
    try {
      daemon.apply(withNode(pod, this.source.node), this.source.allocatable)
    } catch (e) {
      throw invalid(e, `pod ${podName(request.pod)}`)
    }
    await mkdir(target, { recursive: true, mode: 0o750 })
    try {
      if (await prepareMountpoint(target)) this.opts.say(`${target}: unmounted a stale mount`)
      await daemon.start()
    } catch (e) {
      await rmdir(target).catch(() => {})
      throw new CsiError('INTERNAL', `${target}: cannot mount: ${(e as Error).message}`)
    }
    const p: Published = { volumeId, target, request, daemon }
    this.byTarget.set(target, p)
    let set = this.byUid.get(request.pod.uid)
    if (!set) this.byUid.set(request.pod.uid, (set = new Set()))
    set.add(p)
    const gen = daemon.generation!
    this.opts.say(`published ${who} at ${target} (${gen.name}, ${gen.projection.files.length} files)`)
  }

  /** The pod, once the node's watch has it; CsiError if it does not come, or is another. */
  private podFor(ref: PodRef, deadline: number, signal: AbortSignal): Promise<Pod> {
    const grace = this.opts.uidGraceMs ?? 2000
    // Answer before the caller gives up, so that it hears why.
    const until = deadline - Math.min(1000, Math.max(0, (deadline - Date.now()) / 10))
    return new Promise((resolve, reject) => {
      let mismatchSince: number | undefined
      let timer: NodeJS.Timeout | undefined
      const done = (): void => { stop(); clearTimeout(timer); signal.removeEventListener('abort', aborted) }
      const fail = (e: CsiError): void => { done(); reject(e) }
      const aborted = (): void => fail(new CsiError('ABORTED', `pod ${podName(ref)}: the volume was unpublished while its publish waited for the pod`))
      const check = (): void => {
        const now = Date.now()
        if (this.source.synced) {
          const p = this.source.byUid(ref.uid)
          if (p && (p.namespace !== ref.namespace || p.name !== ref.name)) {
            return fail(new CsiError('FAILED_PRECONDITION', `pod uid ${ref.uid} is pod ${p.namespace}/${p.name}, not ${podName(ref)}: refusing to serve another pod's data`))
          }
          if (p?.error) return fail(new CsiError('INVALID_ARGUMENT', p.error))
          if (p?.pod) { done(); resolve(p.pod); return }
          const other = this.source.byName(ref.namespace, ref.name)
          if (other) {
            mismatchSince ??= now
            if (now - mismatchSince >= grace) {
              return fail(new CsiError('FAILED_PRECONDITION', `pod ${podName(ref)} has uid ${other.uid}, not ${ref.uid} (csi.storage.k8s.io/pod.uid): refusing to serve another pod's data`))
            }
          } else {
            mismatchSince = undefined
          }
        }
        if (now >= until) {
          const why = this.source.synced ? `is not on node ${this.source.nodeName} in the API server (yet)` : 'is not known yet: the pods on this node are still being listed'
          return fail(new CsiError('UNAVAILABLE', `pod ${podName(ref)} (uid ${ref.uid}) ${why}; retry`))
        }
        const wake = mismatchSince !== undefined ? Math.min(until, mismatchSince + grace) : until
        clearTimeout(timer)
        timer = setTimeout(check, wake - now + 1)
      }
      const stop = this.source.listen(() => check())
      signal.addEventListener('abort', aborted)
      if (signal.aborted) aborted()
      else check()
    })
  }

  async unpublish(volumeId: string, targetPath: string): Promise<void> {
    const target = checkTarget(targetPath)
    if (!volumeId) throw new CsiError('INVALID_ARGUMENT', 'volume_id: is required')
    this.waiting.get(target)?.abort()
    return this.serial(target, async () => {
      const p = this.byTarget.get(target)
      if (p) {
        if (p.volumeId !== volumeId) log('unpublish of %s names volume %s; %s is published there', target, volumeId, p.volumeId)
        this.byTarget.delete(target)
        this.byUid.get(p.request.pod.uid)?.delete(p)
        if (this.byUid.get(p.request.pod.uid)?.size === 0) this.byUid.delete(p.request.pod.uid)
        await stopWithin(p.daemon, UNMOUNT_WAIT_MS)
      }
      // A mount left by an earlier process, or one that did not go away in time.
      if ((await mounts()).has(target)) await lazyUnmount(target).catch((e: Error) => log('%s: %s', target, e.message))
      try {
        await rmdir(target)
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code
        if (code !== 'ENOENT') throw new CsiError('INTERNAL', `${target}: cannot remove: ${code}`)
      }
      this.opts.say(p ? `unpublished pod ${podName(p.request.pod)}, volume ${JSON.stringify(p.request.volume.name)} at ${target} (was ${p.daemon.generation?.name})`
        : `unpublished ${target}: nothing was published there`)
    })
  }

  private changed(uid: string | undefined): void {
    const targets = uid === undefined ? [...this.byTarget.values()] : [...(this.byUid.get(uid) ?? [])]
    for (const p of targets) {
      const entry = this.source.byUid(p.request.pod.uid)
      if (entry?.pod) p.daemon.update(withNode(entry.pod, this.source.node), this.source.allocatable)
      else if (entry?.error) p.daemon.problem(entry.error)
    }
  }

  /** Unmounts every volume (at shutdown). */
  async stop(): Promise<void> {
    this.stopListening()
    for (const c of this.waiting.values()) c.abort()
    await Promise.all([...this.byTarget.keys()].map((t) => this.unpublish(this.byTarget.get(t)!.volumeId, t).catch(() => {})))
  }
}

function podName(ref: PodRef): string {
  return `${ref.namespace}/${ref.name}`
}

function checkTarget(p: string | undefined): string {
  if (!p) throw new CsiError('INVALID_ARGUMENT', 'target_path: is required')
  if (!path.isAbsolute(p)) throw new CsiError('INVALID_ARGUMENT', `target_path: ${JSON.stringify(p)} is not an absolute path`)
  return path.resolve(p)
}

function invalid(e: unknown, where?: string): CsiError {
  if (!(e instanceof InputError)) throw e
  const msg = where && !e.message.startsWith(where) ? `${where}: ${e.message}` : e.message
  return new CsiError('INVALID_ARGUMENT', msg.replace(/\n/g, ' '))
}

async function stopWithin(daemon: Daemon, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined
  await Promise.race([
    daemon.stop().catch((e: Error) => log('unmount: %s', e.message)),
    new Promise<void>((resolve) => { timer = setTimeout(resolve, ms) }),
  ])
  clearTimeout(timer)
}
