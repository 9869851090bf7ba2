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
//
// Surviving this process (native-notes/, Restarts): each mount's /dev/fuse descriptor goes to the
// keeper (keeper.ts) and its record (the request and the generation served) to the state
// directory (state.ts), at publish and at every flip. At start, recover() takes the descriptors
// back and serves each recorded volume again on its own connection, with the same generation:
// readers see a pause, not an error. Leaving (detach()) then only stops flipping.
//
// Reconciling: a published volume whose pod has been gone from the API server for a while
// (orphanGraceMs) is unpublished, as the kubelet would have done had it been there: the pod was
// deleted while the kubelet or this process was down.

import { closeSync } from 'node:fs'
import { mkdir, rmdir } from 'node:fs/promises'
import path from 'node:path'
import createDebug from 'debug'
import { machineAllocatable } from '../volume/allocatable.js'
import { Daemon } from '../fs/daemon.js'
import { lazyUnmount, mounts, prepareMountpoint } from '../fs/mountpoint.js'
import { withNode, type Pod } from '../volume/pod.js'
import { InputError } from '../volume/shape.js'
import type { NodeSource } from '../source/node.js'
import type { Generation } from '../volume/generation.js'
import { readVolumeContext, volumeNameOf, type PodRef, type VolumeRequest } from './attributes.js'
import type { Keeper } from './keeper.js'
import type { VolumeRecord, VolumeStore } from './state.js'

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
  /** Where each mount's connection is kept across restarts; none: mounts end with this process. */
  keeper?: Keeper
  /** Where each volume's record is kept across restarts. */
  store?: VolumeStore
  /** How long a published volume's pod may be missing from the API server before it is unpublished. */
  orphanGraceMs?: number
}

interface Published {
  volumeId: string
  target: string
  volumeContext: Record<string, string>
  request: VolumeRequest
  daemon: Daemon
  /** The record's latest save, so that saves land in order. */
  saved: Promise<void>
  /** Since when the pod has been missing from the (listed) API server. */
  missingSince?: number
  /** Its pod's config.seen, from the record of an earlier agent (recover). */
  seen?: string
}

const UNMOUNT_WAIT_MS = 3000

export class Volumes {
  private readonly byTarget = new Map<string, Published>()
  private readonly byUid = new Map<string, Set<Published>>()
  /** The tail of each target's queue of calls. */
  private readonly queues = new Map<string, Promise<unknown>>()
  private readonly waiting = new Map<string, AbortController>()
  private readonly fallback = machineAllocatable()
  private stopListening: () => void = () => {}
  private orphanTimer: NodeJS.Timeout | undefined
  private followed: NodeSource | undefined

  constructor(private readonly opts: VolumesOptions) {}

  /**
   * Starts following the node's pods: every volume is re-rendered as they come (and those
   * recovered before this, from their records, flip if their pods changed meanwhile).
   */
  follow(source: NodeSource): void {
    for (const p of this.byTarget.values()) if (p.seen) source.sawBefore(p.request.pod.uid, p.seen)
    this.followed = source
    this.stopListening = source.listen((uid) => { this.changed(uid); this.reconcile() })
    this.changed(undefined)
    this.reconcile()
  }

  private get source(): NodeSource {
    if (!this.followed) throw new Error('Volumes: follow() the node\'s pods first')
    return this.followed
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
        await this.mount(req.volume_id, target, req.volume_context ?? {}, request, pod)
      } finally {
        if (this.waiting.get(target) === abort) this.waiting.delete(target)
      }
    })
  }

  private published(volumeId: string, target: string, volumeContext: Record<string, string>, request: VolumeRequest, adoptFd?: number): Published {
    const who = `pod ${podName(request.pod)}, volume ${JSON.stringify(request.volume.name)}`
    let p: Published | undefined
    const daemon = new Daemon({
      mountpoint: target,
      settings: { items: request.volume, allocatable: this.fallback },
      say: (line) => this.opts.say(`${who}: ${line}`),
      allowOther: this.opts.allowOther,
      // Each flip once published; the first generation is recorded by mount(), or was before.
      flipped: (gen) => { if (p && this.byTarget.get(target) === p) void this.save(p, gen) },
      ...(adoptFd !== undefined ? { adoptFd } : {}),
    })
    return (p = { volumeId, target, volumeContext, request, daemon, saved: Promise.resolve() })
  }

  private async mount(volumeId: string, target: string, volumeContext: Record<string, string>, request: VolumeRequest, pod: Pod): Promise<void> {
    const p = this.published(volumeId, target, volumeContext, request)
    const { daemon } = p
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
    this.add(p)
    this.opts.keeper?.put(target, daemon.sessionFd())
    await this.save(p, daemon.generation!)
    const gen = daemon.generation!
    this.opts.say(`published pod ${podName(request.pod)}, volume ${JSON.stringify(request.volume.name)} at ${target} (${gen.name}, ${gen.projection.files.length} files)`)
  }

  private add(p: Published): void {
    this.byTarget.set(p.target, p)
    let set = this.byUid.get(p.request.pod.uid)
    if (!set) this.byUid.set(p.request.pod.uid, (set = new Set()))
    set.add(p)
  }

  private remove(p: Published): void {
    this.byTarget.delete(p.target)
    this.byUid.get(p.request.pod.uid)?.delete(p)
    if (this.byUid.get(p.request.pod.uid)?.size === 0) this.byUid.delete(p.request.pod.uid)
  }

  /** Records the generation a volume serves (state.ts); a failure is reported, not thrown. */
  private save(p: Published, generation: Generation): Promise<void> {
    const store = this.opts.store
    if (!store) return Promise.resolve()
    p.seen = this.followed?.seenAt(p.request.pod.uid) ?? p.seen
    const record: VolumeRecord = { volumeId: p.volumeId, target: p.target, volumeContext: p.volumeContext, ...(p.seen ? { seen: p.seen } : {}), generation }
    p.saved = p.saved.then(() => store.save(record)).catch((e: Error) => this.opts.say(`${p.target}: cannot record its volume in ${store.dir}: ${e.message}`))
    return p.saved
  }

  /**
   * Serves again what an earlier process published (at start, before CSI calls come): each
   * recorded volume whose connection the keeper kept is taken over with the generation it served.
   * A record without a connection, or a connection without a record, cannot be served: its mount
   * (dead, or without its state) is unmounted, so that the kubelet's next publish mounts afresh.
   */
  async recover(): Promise<void> {
    const { store, keeper } = this.opts
    if (!store) return
    const records = await store.load((file, why) => this.opts.say(`${file}: not a volume record (${why}); ignored`))
    const held = keeper?.take() ?? new Map<string, number>()
    for (const r of records) {
      const fd = held.get(r.target)
      held.delete(r.target)
      let request: VolumeRequest
      try {
        request = readVolumeContext(r.volumeContext, volumeNameOf(r.target, r.volumeId), this.opts.extensions ? 'allowed' : 'refused')
      } catch (e) {
        this.opts.say(`${r.target}: its recorded volume is no longer valid here (${(e as Error).message}); unmounting it`)
        await this.forget(r.target, fd)
        continue
      }
      if (fd === undefined) {
        this.opts.say(`${r.target}: no connection was kept for it (no keeper, or the node restarted); unmounting what is left there`)
        await this.forget(r.target, fd)
        continue
      }
      const p = this.published(r.volumeId, r.target, r.volumeContext, request, fd)
      if (r.seen) p.seen = r.seen
      try {
        p.daemon.restore(r.generation)
        await p.daemon.start()
      } catch (e) {
        this.opts.say(`${r.target}: cannot take over its connection: ${(e as Error).message}; unmounting it`)
        await this.forget(r.target, fd)
        continue
      }
      this.add(p)
      this.opts.say(`took over pod ${podName(request.pod)}, volume ${JSON.stringify(request.volume.name)} at ${r.target} (${r.generation.name})`)
    }
    for (const [target, fd] of held) {
      this.opts.say(`${target}: the keeper held a connection without a record; unmounting it`)
      await this.forget(target, fd)
    }
  }

  /** Lets go of a volume that cannot be served: its kept connection, its record, its mount. */
  private async forget(target: string, fd: number | undefined): Promise<void> {
    if (fd !== undefined) closeSync(fd)
    this.opts.keeper?.drop(target)
    await this.opts.store?.remove(target)
    if ((await mounts()).has(target)) await lazyUnmount(target).catch((e: Error) => log('%s: %s', target, e.message))
  }

  /** Puts every mount's connection with the keeper again (it restarted). */
  rekeep(): void {
    for (const p of this.byTarget.values()) this.opts.keeper?.put(p.target, p.daemon.sessionFd())
  }

  /** Unpublishes volumes whose pods have been gone from the API server for orphanGraceMs. */
  private reconcile(): void {
    if (!this.followed?.synced) return
    const grace = this.opts.orphanGraceMs ?? 10_000
    const now = Date.now()
    let next = Infinity
    for (const p of this.byTarget.values()) {
      if (this.source.byUid(p.request.pod.uid)) { p.missingSince = undefined; continue }
      p.missingSince ??= now
      if (now - p.missingSince < grace) { next = Math.min(next, p.missingSince + grace); continue }
      p.missingSince = undefined
      this.opts.say(`pod ${podName(p.request.pod)} (uid ${p.request.pod.uid}) is gone from the API server: unpublishing ${p.target}`)
      void this.unpublish(p.volumeId, p.target).catch((e: Error) => this.opts.say(`${p.target}: ${e.message}`))
    }
    clearTimeout(this.orphanTimer)
    if (next < Infinity) this.orphanTimer = setTimeout(() => this.reconcile(), next - now + 1)
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
        this.remove(p)
        this.opts.keeper?.drop(target)
        await p.saved
        await this.opts.store?.remove(target)
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
    if (!this.followed) return
    const targets = uid === undefined ? [...this.byTarget.values()] : [...(this.byUid.get(uid) ?? [])]
    for (const p of targets) {
      const entry = this.source.byUid(p.request.pod.uid)
      if (entry?.pod) p.daemon.update(withNode(entry.pod, this.source.node), this.source.allocatable)
      else if (entry?.error) p.daemon.problem(entry.error)
    }
  }

  /** Unmounts every volume (at shutdown without a keeper). */
  async stop(): Promise<void> {
    this.quiet()
    await Promise.all([...this.byTarget.keys()].map((t) => this.unpublish(this.byTarget.get(t)!.volumeId, t).catch(() => {})))
  }

  /** Leaves every volume mounted, its connection with the keeper (at shutdown with one). */
  async detach(): Promise<void> {
    this.quiet()
    await Promise.all([...this.byTarget.values()].map(async (p) => { await p.daemon.detach(); await p.saved }))
  }

  private quiet(): void {
    this.stopListening()
    clearTimeout(this.orphanTimer)
    for (const c of this.waiting.values()) c.abort()
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
