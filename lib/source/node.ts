// Every pod on one node, and the Node itself, kept current from the API server with two
// watches whatever the number of pods: the pods with spec.nodeName=NODE (a field selector, the
// one the kubelet uses and the API server's watch cache indexes), and the Node by name for its
// allocatable and its labels (the node.metadata.labels extension). Both are ListWatches (watch.ts), so outages, 410s and backoff behave as for
// `dapifs mount --pod`.
//
// Pods are kept by uid, parsed once per change. A pod that cannot be read is kept as its error,
// so that whoever waits for it hears why. Listeners hear the uid of each pod that changed, and
// `undefined` when the allocatable or the labels did (which concerns every pod). The Node's
// kubelet version says which kubelet a volume published from then on renders as (release.ts).

import { CoreV1Api, type KubeConfig } from '@kubernetes/client-node'
import createDebug from 'debug'
import { nodeViewOf } from '../volume/allocatable.js'
import { asKubeletSeesIt, rfc3339Nano } from '../volume/kubelet-pod.js'
import { readPod, type NodeView, type Pod } from '../volume/pod.js'
import { ListWatch, NamedWatch, type WatchObserver } from './watch.js'

const log = createDebug('dapifs:source:node')

export interface NodePod {
  namespace: string
  name: string
  uid: string
  /** The pod, or why it could not be read. */
  pod?: Pod
  error?: string
}

export interface NodeReporter {
  problem(message: string): void
  info(message: string): void
}

type Listener = (uid: string | undefined) => void

export class NodeSource {
  private readonly pods = new Map<string, NodePod>()
  /** When each pod (by uid) was first seen: its kubernetes.io/config.seen (kubelet-pod.ts). */
  private readonly seen = new Map<string, string>()
  private readonly podWatch: ListWatch
  private readonly nodeWatch: NamedWatch
  private readonly listeners = new Set<Listener>()
  private podsListed = false
  private nodeSettled = false
  private lastProblem: string | undefined
  /**
   * What is known of the Node: its allocatable and its labels, each missing until known or when
   * it cannot be read (the fallback then stands in: daemon.ts). A new object at each change.
   */
  node: Partial<NodeView> = {}
  /** Its kubelet's release (status.nodeInfo.kubeletVersion: "v1.37.2"); undefined until known. */
  kubeletVersion: string | undefined
  private nodeKey: string | undefined

  constructor(kc: KubeConfig, readonly nodeName: string, private readonly report: NodeReporter,
    observe?: (resource: 'pods' | 'node') => WatchObserver) {
    const core = kc.makeApiClient(CoreV1Api)
    const fieldSelector = `spec.nodeName=${nodeName}`
    this.podWatch = new ListWatch(kc, {
      what: `pods on node ${nodeName}`,
      path: '/api/v1/pods',
      fieldSelector,
      list: async () => {
        const l = await core.listPodForAllNamespaces({ fieldSelector })
        return { items: l.items, resourceVersion: l.metadata?.resourceVersion ?? '' }
      },
    }, {
      listed: (items) => this.listed(items),
      changed: (obj, how) => this.changed(obj, how),
      problem: (m, e) => this.problem(m, e),
      recovered: () => this.recovered(),
    }, observe?.('pods'))
    this.nodeWatch = new NamedWatch(kc, {
      what: `node ${nodeName}`,
      path: '/api/v1/nodes',
      name: nodeName,
      list: async () => {
        const l = await core.listNode({ fieldSelector: `metadata.name=${nodeName}` })
        return { items: l.items, resourceVersion: l.metadata?.resourceVersion ?? '' }
      },
    }, {
      object: (obj) => this.nodeChanged(obj),
      problem: (m, e) => {
        this.settleNode()
        this.problem(this.node.allocatable ? m : `${m} (unset limits read the fallback allocatable)`, e)
      },
      recovered: () => this.recovered(),
    }, observe?.('node'))
  }

  start(): void {
    this.podWatch.start()
    this.nodeWatch.start()
  }

  stop(): void {
    this.podWatch.stop()
    this.nodeWatch.stop()
    this.listeners.clear()
  }

  /** Whether the pods have been listed and the Node settled (read, or given up on for now). */
  get synced(): boolean {
    return this.podsListed && this.nodeSettled
  }

  /** Whether the pods have been listed, once: from then on, the watch keeps them current. */
  get podsSynced(): boolean {
    return this.podsListed
  }

  /** Whether the Node has been read (or found missing) from the API server, once. */
  get nodeSynced(): boolean {
    return this.nodeKey !== undefined // set by the first read
  }

  get size(): number {
    return this.pods.size
  }

  byUid(uid: string): NodePod | undefined {
    return this.pods.get(uid)
  }

  byName(namespace: string, name: string): NodePod | undefined {
    for (const p of this.pods.values()) if (p.namespace === namespace && p.name === name) return p
    return undefined
  }

  /** When the pod was first seen (its kubernetes.io/config.seen), if it has been. */
  seenAt(uid: string): string | undefined {
    return this.seen.get(uid)
  }

  /**
   * A first sight of the pod from before this process (an earlier agent's, from its records): it
   * stays the pod's config.seen, as the kubelet's does while the kubelet runs. Before start().
   */
  sawBefore(uid: string, seen: string): void {
    if (!this.seen.has(uid)) this.seen.set(uid, seen)
  }

  /** Calls `fn` after every change; returns the function that stops it. */
  listen(fn: Listener): () => void {
    this.listeners.add(fn)
    return () => { this.listeners.delete(fn) }
  }

  private emit(uid: string | undefined): void {
    for (const fn of [...this.listeners]) fn(uid)
  }

  private problem(message: string, err: unknown): void {
    log('%s (%s)', message, (err as Error | undefined)?.message?.split('\n')[0] ?? '')
    if (message === this.lastProblem) return
    this.lastProblem = message
    this.report.problem(message)
  }

  private recovered(): void {
    if (this.lastProblem === undefined) return
    this.lastProblem = undefined
    this.report.info(`node ${this.nodeName}: connected to the API server again`)
  }

  private listed(items: unknown[]): void {
    const seen = new Set<string>()
    for (const obj of items) {
      const uid = this.store(obj)
      if (uid) seen.add(uid)
    }
    for (const uid of [...this.pods.keys()]) {
      if (!seen.has(uid)) { this.pods.delete(uid); this.seen.delete(uid); this.emit(uid) }
    }
    this.podsListed = true
    log('%d pods on node %s', this.pods.size, this.nodeName)
    this.emit(undefined)
  }

  private changed(obj: unknown, how: 'added' | 'modified' | 'deleted'): void {
    if (how === 'deleted') {
      const uid = (obj as { metadata?: { uid?: string } })?.metadata?.uid
      if (uid) this.seen.delete(uid)
      if (uid && this.pods.delete(uid)) this.emit(uid)
      return
    }
    this.store(obj)
  }

  /** Keeps the pod (or its error), tells listeners if it changed; returns its uid. */
  private store(obj: unknown): string | undefined {
    const meta = (obj as { metadata?: { namespace?: string; name?: string; uid?: string; resourceVersion?: string } })?.metadata
    if (!meta?.uid) return undefined
    const entry: NodePod = { namespace: meta.namespace ?? '', name: meta.name ?? '', uid: meta.uid }
    let seen = this.seen.get(meta.uid)
    if (seen === undefined) this.seen.set(meta.uid, seen = rfc3339Nano(performance.timeOrigin + performance.now()))
    try {
      entry.pod = readPod(asKubeletSeesIt(obj, seen))
    } catch (e) {
      entry.error = `pod ${entry.namespace}/${entry.name}: ${(e as Error).message}`
    }
    this.pods.set(meta.uid, entry)
    this.emit(meta.uid)
    return meta.uid
  }

  private nodeChanged(obj: unknown): void {
    // The Node changes often (status, heartbeats); only its allocatable and labels concern the volumes.
    const n = obj as { status?: { allocatable?: unknown; nodeInfo?: { kubeletVersion?: unknown } }; metadata?: { labels?: unknown } } | undefined
    const version = n?.status?.nodeInfo?.kubeletVersion
    const key = obj === undefined ? '' : JSON.stringify([n?.status?.allocatable ?? null, n?.metadata?.labels ?? null, version ?? null])
    if (this.nodeSettled && key === this.nodeKey) return
    this.nodeKey = key
    this.kubeletVersion = typeof version === 'string' && version !== '' ? version : undefined
    const node = nodeViewOf(this.nodeName, obj, (m, e) => this.problem(m, e))
    this.node = node
    this.settleNode()
    this.emit(undefined)
  }

  private settleNode(): void {
    if (this.nodeSettled) return
    this.nodeSettled = true
    this.emit(undefined)
  }
}
