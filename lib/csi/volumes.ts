// The volumes published on this node: one dapifs mount (a Daemon) per target path, each fed by
// the node's one pod watch.
//
// Publish, for a target:
//   1. read the request (attributes.ts): the target, the attributes and the items' size at once,
//      then the items, parsed off this thread (parser.ts); bad items are INVALID_ARGUMENT, with
//      the line `dapifs render` gives;
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
// or labels re-renders all of them. A Daemon flips only when its files change. Re-renders wait
// in a queue of pods, one pod per turn of the event loop, so that the FUSE requests and CSI
// calls of every other pod are answered in between: one pod's churn, or a Node change that
// concerns every pod, never holds the thread for longer than one pod's volumes take, and that is
// bounded by the budgets (volume/budget.ts). A pod that changes again while it waits is rendered
// once, with its latest state.
//
// Every pod author is a possible adversary here: a publish is checked before anything is built
// (the target is where the kubelet puts this pod's CSI volumes, the items within the budgets,
// the pod's volumes and bytes within its own), and what reaches the log of theirs is quoted.
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
import { DEFAULT_AGENT_BUDGET, causeOf, overBudget, type AgentBudget } from '../volume/budget.js'
import { Daemon } from '../fs/daemon.js'
import { KeptBytes } from '../fs/kept.js'
import { DAPIFS_FSTYPE, lazyUnmount, mounts, prepareMountpoint } from '../fs/mountpoint.js'
import { settled } from '../fs/mount.js'
import { DEFAULT_NODE_LABEL_KEYS, nodeLabelKeyOf, nodeViewFor, type NodeLabelKeys } from '../volume/extensions.js'
import type { NodeView, Pod } from '../volume/pod.js'
import { InputError } from '../volume/shape.js'
import type { NodeSource } from '../source/node.js'
import { NEWEST, parseRelease, type KubeletRelease } from '../volume/release.js'
import { checkGeneration, type Generation } from '../volume/generation.js'
import type { Projection } from '../volume/projection.js'
import { ITEMS_WHERE, checkVolumeContext, readVolumeContext, volumeNameOf, volumeRequest, type PodRef, type VolumeRequest } from './attributes.js'
import { AttributeParser } from './parser.js'
import { lowerOtherThreads } from './foreground.js'
import type { Keeper } from './keeper.js'
import type { VolumeRecord, VolumeStore } from './state.js'
import type { LineFields, Say } from '../logline.js'

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
  volume_capability?: { block?: unknown; mount?: { volume_mount_group?: string } | null } | null
}

/**
 * What the node agent's metrics and events hear (observe/): nothing here knows them. Each is
 * called as it happens, and must not block.
 */
export interface VolumesObserver {
  /** A published volume flipped to a new generation. */
  flipped(): void
  /** A pod's change (or the Node's) reached a volume: seconds from the watch event to its flip done. */
  updated(seconds: number): void
  /** A published volume could not be rendered again (a bad update, over a budget): it keeps its generation. */
  refused(): void
  /**
   * The same, said once per cause (Daemon.problem): for the pod's author, who cannot read this
   * log but sees the pod's events.
   */
  reported(pod: PodRef, volume: string, message: string, cause: string): void
}

export interface VolumesOptions {
  say: Say
  observe?: VolumesObserver
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
  /** The kubelet's root directory (--root-dir): targets must be its pods' CSI volume directories. */
  kubeletDir: string
  /** What a pod's volumes may ask for; DEFAULT_AGENT_BUDGET when absent. */
  budget?: AgentBudget
  /** The Node's label keys pods may read (node.metadata.labels); DEFAULT_NODE_LABEL_KEYS when absent. */
  nodeLabelKeys?: NodeLabelKeys
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
  /** The kubelet it renders and flips as. */
  release: KubeletRelease
  /**
   * The generation a change of its pod is on its way to, and when the oldest change it carries
   * came (performance.now()): the time to the flip is observe.updated's.
   */
  updating?: { gen: Generation; since: number }
}

const UNMOUNT_WAIT_MS = 3000
/** Recorded volumes recover() takes over in a turn of the event loop. */
const TAKING = 2
/** fuse-native's addon takes the mountpoint in a 1,024-byte buffer, NUL included. */
export const MAX_TARGET_BYTES = 1023

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
  private readonly budget: AgentBudget
  /** Past generations, for the node's budget. */
  private readonly kept: KeptBytes
  /**
   * Pods (by uid) whose volumes wait to be rendered again, in the order they changed, each with
   * when its oldest change not yet rendered came (performance.now()).
   */
  private readonly dirty = new Map<string, number>()
  /** Whether the queue of pods is being worked through (drainRenders). */
  private rendering = false
  private quieted = false

  private readonly nodeLabelKeys: NodeLabelKeys
  /** Parses the items pod authors write, off this thread. */
  private readonly parser = new AttributeParser()
  /** The Node as pods may see it, for the source's latest Node. */
  private nodeSeen: { of: Partial<NodeView>; view: Partial<NodeView> } | undefined
  private saidNoVersion = false
  /** Handed over to a newer agent (handOver): every CSI call is UNAVAILABLE, for the kubelet to retry there. */
  private leaving = false
  /** Where targets must be (checkTarget), made once. */
  private targetShape: RegExp | undefined

  constructor(private readonly opts: VolumesOptions) {
    this.budget = opts.budget ?? DEFAULT_AGENT_BUDGET
    this.kept = new KeptBytes(this.budget.nodeKept)
    this.nodeLabelKeys = opts.nodeLabelKeys ?? new Set(DEFAULT_NODE_LABEL_KEYS)
  }

  /** What is known of the Node, with only the labels pods may read. */
  private get node(): Partial<NodeView> {
    const node = this.source.node
    if (this.nodeSeen?.of !== node) this.nodeSeen = { of: node, view: nodeViewFor(node, this.nodeLabelKeys) }
    return this.nodeSeen.view
  }

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

  /** Runs calls for one target in order; none once handed over. */
  private serial<T>(target: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.queues.get(target) ?? Promise.resolve()
    const next = prev.catch(() => {}).then(() => { this.checkServing(); return fn() })
    const tail = next.catch(() => {})
    this.queues.set(target, tail)
    void tail.then(() => { if (this.queues.get(target) === tail) this.queues.delete(target) })
    return next
  }

  private checkServing(): void {
    if (this.leaving) throw new CsiError('UNAVAILABLE', 'this agent has handed its volumes over to a newer one, which serves the CSI socket now; retry')
  }

  async publish(req: PublishRequest, deadline: number): Promise<void> {
    this.checkServing()
    // The fields CSI requires, in the order of the spec's message, then what they hold.
    if (!req.volume_id) throw new CsiError('INVALID_ARGUMENT', 'volume_id: is required')
    if (!req.target_path) throw new CsiError('INVALID_ARGUMENT', 'target_path: is required')
    if (!req.volume_capability) throw new CsiError('INVALID_ARGUMENT', 'volume_capability: is required')
    if (req.volume_capability.block) throw new CsiError('INVALID_ARGUMENT', 'volume_capability: dapifs volumes are filesystems, not block devices')
    const target = this.checkTarget(req.target_path)
    const mountGroup = volumeMountGroup(req)
    const ctx = req.volume_context ?? {}
    let texts: { items: string }
    try {
      texts = checkVolumeContext(ctx, this.budget)
    } catch (e) {
      throw invalid(e)
    }
    // An unpublish that comes while this publish waits (its turn, the parse, or the pod) aborts it.
    const abort = new AbortController()
    this.waiting.set(target, abort)
    return this.serial(target, async () => {
      try {
        let items: unknown
        try {
          items = await this.parser.parse(texts.items, ITEMS_WHERE)
        } catch (e) {
          throw invalid(e)
        }
        if (abort.signal.aborted) throw new CsiError('ABORTED', `${target}: the volume was unpublished while its publish was parsed`)
        const request = this.readRequest(target, req.volume_id, ctx, items)
        const existing = this.byTarget.get(target)
        if (existing) {
          if (existing.volumeId === req.volume_id && existing.request.key === request.key) return
          throw new CsiError('ALREADY_EXISTS', `${target}: another volume is published there (${JSON.stringify(existing.volumeId)}, pod ${podName(existing.request.pod)})`)
        }
        const others = this.byUid.get(request.pod.uid)?.size ?? 0
        if (others >= this.budget.podVolumes) {
          throw new CsiError('INVALID_ARGUMENT', overBudget(`pod ${podName(request.pod)}`, 'would have', others + 1, this.budget.podVolumes, 'pod-volumes', 'volumes').message)
        }
        const pod = await this.podFor(request.pod, deadline, abort.signal)
        if (mountGroup !== undefined && pod.fsGroup !== undefined && pod.fsGroup !== mountGroup) {
          throw new CsiError('INVALID_ARGUMENT', `volume_capability.mount.volume_mount_group: ${mountGroup} is not the fsGroup of pod ${podName(request.pod)} (${pod.fsGroup})`)
        }
        await this.mount(req.volume_id, target, ctx, request, pod, this.kubeletRelease(), mountGroup)
      } finally {
        if (this.waiting.get(target) === abort) this.waiting.delete(target)
      }
    })
  }

  /**
   * The kubelet a volume published now renders and flips as: the Node's (its
   * status.nodeInfo.kubeletVersion), or the newest supported while the Node is not known. A
   * release outside the supported range is refused: nothing says how its kubelet writes.
   */
  private kubeletRelease(): KubeletRelease {
    const version = this.followed?.kubeletVersion
    if (version === undefined) {
      if (!this.saidNoVersion) this.opts.say(`node ${this.followed?.nodeName ?? ''}: its kubelet's version is not known (yet): volumes render as Kubernetes ${NEWEST.name}'s kubelet`, { level: 'warning' })
      this.saidNoVersion = true
      return NEWEST
    }
    this.saidNoVersion = false
    try {
      return parseRelease(version, `node ${this.source.nodeName}: kubelet`)
    } catch (e) {
      throw new CsiError('FAILED_PRECONDITION', (e as Error).message)
    }
  }

  private published(volumeId: string, target: string, volumeContext: Record<string, string>, request: VolumeRequest, release: KubeletRelease, adoptFd?: number, fsGroup?: number): Published {
    const who = `pod ${podName(request.pod)}, volume ${JSON.stringify(request.volume.name)}`
    const about = fieldsOf(request, target)
    let p: Published | undefined
    const daemon = new Daemon({
      mountpoint: target,
      settings: { items: request.volume, allocatable: this.fallback, budget: this.budget, release, ...(fsGroup !== undefined ? { fsGroup } : {}) },
      say: (line, fields) => this.opts.say(`${who}: ${line}`, { ...fields, ...about }),
      reported: (message, cause) => this.opts.observe?.reported(request.pod, request.volume.name, message, cause),
      allowOther: this.opts.allowOther,
      // Each flip once published; the first generation is recorded by mount(), or was before.
      flipped: (gen) => {
        if (!p || this.byTarget.get(target) !== p) return
        this.opts.observe?.flipped()
        // Flips coalesce: only the latest generation asked for ends the wait.
        if (p.updating?.gen === gen) {
          this.opts.observe?.updated((performance.now() - p.updating.since) / 1000)
          p.updating = undefined
        }
        void this.save(p, gen)
      },
      kept: { bytes: this.budget.kept, ms: this.budget.keptFor * 1000, node: this.kept },
      ...(adoptFd !== undefined ? { adoptFd } : {}),
    })
    return (p = { volumeId, target, volumeContext, request, daemon, saved: Promise.resolve(), release })
  }

  private async mount(volumeId: string, target: string, volumeContext: Record<string, string>, request: VolumeRequest, pod: Pod, release: KubeletRelease, fsGroup?: number): Promise<void> {
    const p = this.published(volumeId, target, volumeContext, request, release, undefined, fsGroup)
    const { daemon } = p
    try {
      const projection = daemon.render(pod, this.node)
      const others = [...this.byUid.get(request.pod.uid) ?? []].map((o) => bytesOf(o.daemon.latestGeneration?.projection))
      this.checkPodBytes(request.pod, [...others, bytesOf(projection)])
      await turn() // rendering was one turn; building the generation's nodes is the next
      daemon.serve(projection)
    } catch (e) {
      throw invalid(e, `pod ${podName(request.pod)}`)
    }
    await mkdir(target, { recursive: true, mode: 0o750 })
    try {
      if (await prepareMountpoint(target)) this.opts.say(`${target}: unmounted a stale mount`, fieldsOf(request, target))
      await daemon.start()
    } catch (e) {
      await rmdir(target).catch(() => {})
      throw new CsiError('INTERNAL', `${target}: cannot mount: ${(e as Error).message}`)
    }
    this.add(p)
    this.changed(request.pod.uid) // a change of the pod while it was mounted: rendered again, flipped if need be
    this.opts.keeper?.put(target, daemon.sessionFd())
    await this.save(p, daemon.generation!)
    const gen = daemon.generation!
    this.opts.say(`published pod ${podName(request.pod)}, volume ${JSON.stringify(request.volume.name)} at ${target} (${gen.name}, ${gen.projection.files.length} files)`,
      fieldsOf(request, target))
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
    const record: VolumeRecord = { volumeId: p.volumeId, target: p.target, volumeContext: p.volumeContext, ...(p.seen ? { seen: p.seen } : {}), kubelet: p.release.name, generation }
    p.saved = p.saved.then(() => store.save(record)).catch((e: Error) => this.opts.say(`${p.target}: cannot record its volume in ${store.dir}: ${e.message}`, { level: 'error', ...fieldsOf(p.request, p.target) }))
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
    // Until every volume answers, the process's other threads wait (foreground.ts).
    const putBack = lowerOtherThreads()
    let held: Map<string, number>
    try {
      held = await this.takeOverAll(store, keeper)
    } finally {
      putBack()
    }
    for (const [target, fd] of held) {
      this.opts.say(`${target}: the keeper held a connection without a record; unmounting it`, { level: 'warning', target })
      await this.forget(target, fd)
    }
  }

  /** Takes over each recorded volume the keeper has a connection of; the connections left, without a record. */
  private async takeOverAll(store: VolumeStore, keeper: Keeper | undefined): Promise<Map<string, number>> {
    const t0 = performance.now()
    const records = await store.load((file, why) => this.opts.say(`${file}: not a volume record (${why}); ignored`, { level: 'warning' }))
    const t1 = performance.now()
    const held = keeper?.take() ?? new Map<string, number>()
    const t2 = performance.now()
    // Each record's fd, taken from `held` first, so that what is left there has no record.
    const each = records.map((r) => { const fd = held.get(r.target); held.delete(r.target); return [r, fd] as const })
    // Each volume's line, said once every volume answers, in one write (a thousand lines, one
    // write at a time, were a tenth of the takeover).
    const told: Array<[string, LineFields]> = []
    const takeOver = async (r: VolumeRecord, fd: number | undefined): Promise<void> => {
      let request: VolumeRequest
      // Checked as a publish would be, and its generation as a rendering would be, before it is
      // served: the state directory is the node's, but what it holds came from pod authors.
      try {
        request = this.readRequest(this.checkTarget(r.target), r.volumeId, r.volumeContext)
        checkGeneration(r.generation, this.budget)
      } catch (e) {
        this.opts.say(`${JSON.stringify(r.target)}: its recorded volume is not valid here (${(e as Error).message.replace(/\n/g, ' ')}); unmounting it`, { level: 'warning' })
        await this.forget(r.target, fd)
        return
      }
      if (fd === undefined) {
        this.opts.say(`${r.target}: no connection was kept for it (no keeper, or the node restarted); unmounting what is left there`, { level: 'warning', ...fieldsOf(request, r.target) })
        await this.forget(r.target, fd)
        return
      }
      const p = this.published(r.volumeId, r.target, r.volumeContext, request, recordedRelease(r.kubelet), fd)
      if (r.seen) p.seen = r.seen
      try {
        p.daemon.restore(r.generation)
        await p.daemon.start()
      } catch (e) {
        this.opts.say(`${r.target}: cannot take over its connection: ${(e as Error).message}; unmounting it`, { level: 'error', ...fieldsOf(request, r.target) })
        await this.forget(r.target, fd)
        return
      }
      this.add(p)
      told.push([`took over pod ${podName(request.pod)}, volume ${JSON.stringify(request.volume.name)} at ${r.target} (${r.generation.name})`, fieldsOf(request, r.target)])
    }
    // A couple per turn of the event loop: a takeover is a few hundred microseconds of this
    // thread's, and in the turns between them, the requests of the volumes taken over already are
    // answered (a thousand volumes take most of a second; readers of the first need not wait).
    let next = 0
    const taker = async (): Promise<void> => {
      for (let i = next++; i < each.length; i = next++) {
        await takeOver(...each[i]!)
        await turn() // the requests of the volumes taken over are answered in between
      }
    }
    await Promise.all(Array.from({ length: Math.min(TAKING, each.length) }, taker))
    const t3 = performance.now()
    // What readers asked while no agent ran is answered before anything else (command.ts) loads.
    if (this.byTarget.size > 0) {
      await settled()
      const took = `took over ${this.byTarget.size} volumes in ${(performance.now() - t0).toFixed(0)} ms, ${performance.now().toFixed(0)} ms after this process started`
      const t4 = performance.now()
      // One write, at the turn's end (stderrSay).
      for (const [line, fields] of told) this.opts.say(line, fields)
      this.opts.say(took)
      log('recover: records %d ms, connections %d ms, takeovers %d ms, waiting readers %d ms, lines %d ms', ...[t1 - t0, t2 - t1, t3 - t2, t4 - t3, performance.now() - t4].map(Math.round))
    }
    return held
  }

  /** Lets go of a volume that cannot be served: its kept connection, its record, its mount. */
  private async forget(target: string, fd: number | undefined): Promise<void> {
    if (fd !== undefined) closeSync(fd)
    this.opts.keeper?.drop(target)
    await this.opts.store?.remove(target)
    if ((await mounts()).get(target) === DAPIFS_FSTYPE) await lazyUnmount(target).catch((e: Error) => log('%s: %s', target, e.message))
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
      this.opts.say(`pod ${podName(p.request.pod)} (uid ${p.request.pod.uid}) is gone from the API server: unpublishing ${p.target}`, fieldsOf(p.request, p.target))
      void this.unpublish(p.volumeId, p.target).catch((e: Error) => this.opts.say(`${p.target}: ${e.message}`, { level: 'error', ...fieldsOf(p.request, p.target) }))
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
    this.checkServing()
    if (!volumeId) throw new CsiError('INVALID_ARGUMENT', 'volume_id: is required')
    const target = this.checkTarget(targetPath)
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
      // A mount left by an earlier process, or one that did not go away in time: if it is one of
      // ours. Anything else mounted there is not this driver's to unmount.
      const type = (await mounts()).get(target)
      if (type === DAPIFS_FSTYPE) await lazyUnmount(target).catch((e: Error) => log('%s: %s', target, e.message))
      else if (type !== undefined) throw new CsiError('FAILED_PRECONDITION', `${target}: a ${JSON.stringify(type)} filesystem is mounted there, not a dapifs volume; not unmounting it`)
      try {
        await rmdir(target)
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code
        if (code !== 'ENOENT') throw new CsiError('INTERNAL', `${target}: cannot remove: ${code}`)
      }
      this.opts.say(p ? `unpublished pod ${podName(p.request.pod)}, volume ${JSON.stringify(p.request.volume.name)} at ${target} (was ${p.daemon.generation?.name})`
        : `unpublished ${target}: nothing was published there`, p ? fieldsOf(p.request, target) : { target })
    })
  }

  /** A pod changed (undefined: the Node did, which concerns them all): queue its volumes. */
  private changed(uid: string | undefined): void {
    if (!this.followed || this.quieted) return
    const now = performance.now()
    const mark = (u: string): void => { if (!this.dirty.has(u)) this.dirty.set(u, now) }
    if (uid === undefined) for (const u of this.byUid.keys()) mark(u)
    else if (this.byUid.has(uid)) mark(uid)
    void this.drainRenders()
  }

  /**
   * Works through the queue of pods, one at a time, each step in a turn of its own; only once the
   * pods are listed and the Node read (or given up on): rendered before, a volume that reads the
   * Node (its labels, its allocatable, its kubelet's release) would flip to the stand-ins' bytes,
   * as every volume taken over at a restart did, and back once the Node came. The source says
   * when it is synced, and the queue is worked through then.
   */
  private async drainRenders(): Promise<void> {
    if (this.rendering) return
    this.rendering = true
    try {
      while (this.dirty.size > 0 && !this.quieted && this.source.synced) {
        await turn()
        const [uid, since] = this.dirty.entries().next().value!
        this.dirty.delete(uid)
        await this.rerender(uid, since)
      }
    } finally {
      this.rendering = false
    }
  }

  /**
   * Renders a pod's volumes again; within its budget, each flips if its files changed. `since`:
   * when the change came, for the time until its flip is done (observe.updated).
   */
  private async rerender(uid: string, since: number): Promise<void> {
    const targets = [...this.byUid.get(uid) ?? []]
    const entry = this.source.byUid(uid)
    if (targets.length === 0 || !entry) return
    const refuse = (p: Published, message: string, cause?: string): void => {
      this.opts.observe?.refused()
      p.daemon.problem(message, cause)
    }
    if (entry.error || !entry.pod) {
      for (const p of targets) refuse(p, entry.error ?? `pod ${podName(targets[0]!.request.pod)}: not readable`)
      return
    }
    const { pod } = entry
    const node = this.node
    const rendered: (Projection | Error)[] = []
    for (const p of targets) {
      try {
        rendered.push(p.daemon.render(pod, node))
      } catch (e) {
        rendered.push(e as Error)
      }
      if (targets.length > 1) await turn()
    }
    try {
      this.checkPodBytes(targets[0]!.request.pod, rendered.map((r, i) => bytesOf(r instanceof Error ? targets[i]!.daemon.latestGeneration?.projection : r)))
    } catch (e) {
      for (const p of targets) refuse(p, (e as Error).message, causeOf(e as Error))
      return
    }
    for (const [i, r] of rendered.entries()) {
      const p = targets[i]!
      if (this.byTarget.get(p.target) !== p) continue // unpublished meanwhile
      if (r instanceof Error) refuse(p, r.message, causeOf(r))
      else {
        await turn() // rendering was a turn; building its generation is another
        if (p.daemon.served(r)) p.updating = { gen: p.daemon.latestGeneration!, since: p.updating?.since ?? since }
      }
    }
  }

  /** The pod's volumes together (their renderings' sizes) must be within the pod's budget. */
  private checkPodBytes(ref: PodRef, sizes: number[]): void {
    const total = sizes.reduce((a, b) => a + b, 0)
    if (total > this.budget.pod) throw overBudget(`pod ${podName(ref)}`, `would serve, in ${sizes.length} volumes,`, total, this.budget.pod, 'pod', 'bytes')
  }

  /**
   * Where the kubelet puts this pod's CSI volumes: KUBELET/pods/UID/volumes/kubernetes.io~csi/NAME/mount,
   * and short enough for the addon. Any other path is refused, whatever asks.
   */
  private checkTarget(p: string | undefined, uid?: string): string {
    if (!p) throw new CsiError('INVALID_ARGUMENT', 'target_path: is required')
    const where = `target_path ${JSON.stringify(p)}`
    if (!path.isAbsolute(p)) throw new CsiError('INVALID_ARGUMENT', `${where}: is not an absolute path`)
    const target = path.resolve(p)
    if (Buffer.byteLength(target) > MAX_TARGET_BYTES) throw new CsiError('INVALID_ARGUMENT', `${where}: is longer than ${MAX_TARGET_BYTES} bytes`)
    const m = (this.targetShape ??= targetShape(this.opts.kubeletDir)).exec(target)
    if (!m) {
      throw new CsiError('INVALID_ARGUMENT', `${where}: is not where the kubelet puts a pod's CSI volumes (${path.join(this.opts.kubeletDir, 'pods/UID/volumes/kubernetes.io~csi/NAME/mount')}; dapifs csi --kubelet-dir)`)
    }
    if (uid !== undefined && m[1] !== uid) {
      throw new CsiError('INVALID_ARGUMENT', `${where}: is not a volume directory of pod uid ${JSON.stringify(uid)} (csi.storage.k8s.io/pod.uid)`)
    }
    return target
  }

  /**
   * A publish request's volume, checked as the kubelet's would be: INVALID_ARGUMENT if not. Its
   * items parsed already (off this thread: parser.ts), or parsed here.
   */
  private readRequest(target: string, volumeId: string, ctx: Record<string, string>, items?: unknown): VolumeRequest {
    let request: VolumeRequest
    const extensions = this.opts.extensions ? 'allowed' : 'refused'
    try {
      request = items === undefined ? readVolumeContext(ctx, volumeNameOf(target, volumeId), extensions, this.budget)
        : volumeRequest(ctx, items, volumeNameOf(target, volumeId), extensions, this.budget)
    } catch (e) {
      throw invalid(e)
    }
    this.checkTarget(target, request.pod.uid)
    const keys = this.nodeLabelKeys
    for (const item of keys === 'all' ? [] : request.volume.items) {
      const key = nodeLabelKeyOf(item)
      if (key === undefined || keys === 'all' || keys.has(key)) continue
      const allowed = keys.size > 0 ? `it serves ${[...keys].join(', ')}` : 'it serves none'
      throw new CsiError('INVALID_ARGUMENT', `volume ${JSON.stringify(request.volume.name)}, item ${JSON.stringify(item.path)}: node label ${JSON.stringify(key)} is not one this driver lets pods read (${allowed}: dapifs csi --node-label-keys)`)
    }
    return request
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

  /**
   * Hands every volume over to a newer agent (handover.ts): refuses CSI calls from now on, lets
   * those under way end, then leaves every mount to the keeper (detach) and waits until the
   * requests its pool had read are answered. From then on this process answers no request of any
   * mount, flips nothing and records nothing: the newer agent does. The volumes it served.
   */
  async handOver(): Promise<number> {
    this.leaving = true
    this.quiet()
    await Promise.all([...this.queues.values()])
    const n = this.byTarget.size
    await this.detach()
    await settled(1000)
    return n
  }

  private quiet(): void {
    if (this.quieted) return
    this.stopListening()
    clearTimeout(this.orphanTimer)
    this.quieted = true
    this.dirty.clear()
    this.parser.stop()
    for (const c of this.waiting.values()) c.abort()
  }
}

/** Lets everything that waits on the event loop (FUSE requests, CSI calls, other pods) go first. */
const turn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve))

function podName(ref: PodRef): string {
  return `${ref.namespace}/${ref.name}`
}

/** A volume's line, for the JSON log: its pod, name and target. */
function fieldsOf(request: VolumeRequest, target: string): { pod: PodRef; volume: string; target: string } {
  const { namespace, name, uid } = request.pod
  return { pod: { namespace, name, uid }, volume: request.volume.name, target }
}

/**
 * KUBELET/pods/UID/volumes/kubernetes.io~csi/NAME/mount, UID captured: a pod's uid, and its volume's
 * name (a DNS label), have no '/', space or control character in them.
 */
function targetShape(kubeletDir: string): RegExp {
  const root = path.resolve(kubeletDir).replace(/[.*+?^${}()|[\]\\]/g, '\\$&')
  const part = '[A-Za-z0-9][A-Za-z0-9._-]*'
  return new RegExp(`^${root === '/' ? '' : root}/pods/(${part})/volumes/kubernetes\\.io~csi/${part}/mount$`)
}

/** The bytes a rendering serves, all files together (0 for none). */
function bytesOf(p: Projection | undefined): number {
  let n = 0
  for (const f of p?.files ?? []) n += f.data.length
  return n
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

/** The release a record names (records from before releases were recorded: the newest). */
function recordedRelease(name: string | undefined): KubeletRelease {
  try {
    return name === undefined ? NEWEST : parseRelease(name, 'record')
  } catch {
    return NEWEST
  }
}

/**
 * The group the kubelet asks the volume to have (volume_capability.mount.volume_mount_group), if
 * it asks: a kubelet of 1.26 or later does, with the pod's fsGroup, because this driver advertises
 * VOLUME_MOUNT_GROUP; it then leaves ownership to the driver. dapifs applies it as the kubelet
 * applies an fsGroup to a downwardAPI volume (tree.ts). Without it (1.20 never sends it), the
 * pod's own spec.securityContext.fsGroup, read from the API server, is applied: the same value.
 */
function volumeMountGroup(req: PublishRequest): number | undefined {
  const text = req.volume_capability?.mount?.volume_mount_group
  if (text === undefined || text === '') return undefined
  const n = /^[0-9]{1,10}$/.test(text) ? Number(text) : NaN
  if (!(n <= 0xfffffffe)) throw new CsiError('INVALID_ARGUMENT', `volume_capability.mount.volume_mount_group: ${JSON.stringify(text)} is not a numeric group id from 0 to 4294967294`)
  return n
}
