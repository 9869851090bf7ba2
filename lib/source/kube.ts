// A pod followed in a cluster: the pod itself, and the Node it runs on for status.allocatable
// (what an unset limit reads as) and its labels (the node.metadata.labels extension), each kept
// current by a NamedWatch (watch.ts). The pod goes to the sink with its Node's labels on it.
//
// Until the pod is scheduled there is no Node to ask: the fallback allocatable (this machine's,
// or --node-allocatable) stands in, and the log says so. When spec.nodeName appears or
// changes, the Node watch follows it.
//
// start() resolves once the first state is settled (the pod, and its Node if it has one), so
// the first generation is already right. Until then problems are reported and retried, or,
// with noWait, the first one rejects.

import { existsSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { CoreV1Api, KubeConfig } from '@kubernetes/client-node'
import createDebug from 'debug'
import { nodeViewOf } from '../volume/allocatable.js'
import { readPod, type NodeView, type Pod } from '../volume/pod.js'
import { InputError } from '../volume/shape.js'
import { NamedWatch } from './watch.js'

const log = createDebug('dapifs:source:kube')

export interface KubeSink {
  /** The pod, and what is known of its Node (what is not: the fallback stands in). */
  update(pod: Pod, node: Partial<NodeView> | undefined): void
  problem(message: string): void
  info(message: string): void
  deleted(message: string): void
}

export interface KubeOptions {
  kubeconfig?: string
  context?: string
}

/** `NAMESPACE/NAME`, as the --pod flag takes it. */
export function parsePodRef(text: string): { namespace: string; name: string } {
  const m = /^([a-z0-9]([-a-z0-9]*[a-z0-9])?)\/([a-z0-9]([-a-z0-9.]*[a-z0-9])?)$/.exec(text)
  if (!m || text.length > 317) throw new InputError('--pod', `${JSON.stringify(text)} is not NAMESPACE/NAME (lowercase DNS names, e.g. default/web-1)`)
  return { namespace: m[1]!, name: m[3]! }
}

/**
 * Credentials as kubectl finds them: --kubeconfig, then $KUBECONFIG, then ~/.kube/config, then
 * the service account of the pod we run in.
 */
export function loadKubeConfig(opts: KubeOptions, flag = '--pod'): { kc: KubeConfig; context: string } {
  const kc = new KubeConfig()
  try {
    if (opts.kubeconfig !== undefined) {
      if (!existsSync(opts.kubeconfig)) throw new InputError('--kubeconfig', `${opts.kubeconfig}: no such file`)
      kc.loadFromFile(opts.kubeconfig)
    } else if (process.env.KUBECONFIG || existsSync(path.join(os.homedir(), '.kube', 'config'))) {
      kc.loadFromDefault()
    } else if (process.env.KUBERNETES_SERVICE_HOST) {
      kc.loadFromCluster()
    } else {
      throw new InputError(flag, 'no cluster credentials: give --kubeconfig FILE, set KUBECONFIG, or create ~/.kube/config (in a pod, its service account is used)')
    }
  } catch (e) {
    if (e instanceof InputError) throw e
    throw new InputError(opts.kubeconfig ?? process.env.KUBECONFIG ?? '~/.kube/config', `not a usable kubeconfig: ${(e as Error).message.split('\n')[0]}`)
  }
  if (opts.context !== undefined) {
    const names = kc.getContexts().map((c) => c.name)
    if (!names.includes(opts.context)) throw new InputError('--context', `${JSON.stringify(opts.context)} is not in the kubeconfig (contexts: ${names.join(', ') || 'none'})`)
    kc.setCurrentContext(opts.context)
  }
  if (!kc.getCurrentCluster()) throw new InputError('--context', 'the kubeconfig has no current context with a cluster; give --context NAME')
  return { kc, context: kc.getCurrentContext() || 'in-cluster' }
}

export class KubeSource {
  private readonly core: CoreV1Api
  private readonly podWatch: NamedWatch
  private nodeWatch: NamedWatch | undefined
  private nodeName: string | undefined
  private pod: Pod | undefined
  /** What is known of the pod's Node: its allocatable, its labels. */
  private node: Partial<NodeView> = {}
  private nodeSettled = false
  private live = false
  private settle: { resolve: () => void; reject: (e: Error) => void } | undefined
  readonly who: string

  constructor(private readonly kc: KubeConfig, context: string, readonly namespace: string, readonly name: string,
    private readonly sink: KubeSink, private readonly noWait = false) {
    this.core = kc.makeApiClient(CoreV1Api)
    this.who = `pod ${namespace}/${name} (context ${context})`
    this.podWatch = new NamedWatch(kc, {
      what: this.who,
      path: `/api/v1/namespaces/${namespace}/pods`,
      name,
      list: async () => {
        const l = await this.core.listNamespacedPod({ namespace, fieldSelector: `metadata.name=${name}` })
        return { items: l.items, resourceVersion: l.metadata?.resourceVersion ?? '' }
      },
    }, {
      object: (obj, how) => this.podChanged(obj, how),
      problem: (msg, err) => this.problem(msg, err),
      recovered: () => this.sink.info(`${this.who}: connected to the API server again`),
    })
  }

  /** Starts watching; resolves when the first pod (and its node) are known. */
  start(): Promise<void> {
    const ready = new Promise<void>((resolve, reject) => { this.settle = { resolve, reject } })
    this.podWatch.start()
    return ready
  }

  stop(): void {
    this.podWatch.stop()
    this.nodeWatch?.stop()
    this.settle = undefined
  }

  private problem(message: string, err: unknown): void {
    if (this.settle && this.noWait) {
      const fatal = new InputError('', `${message.replace(/; retrying$/, '')} (--no-wait)`)
      this.settle.reject(fatal)
      this.stop()
      return
    }
    // The message only: an error object from the client could carry request details.
    log('%s (%s)', message, (err as Error | undefined)?.message?.split('\n')[0] ?? '')
    this.sink.problem(message)
  }

  private podChanged(obj: unknown, how: string): void {
    if (obj === undefined) {
      if (how === 'deleted' && this.pod) this.sink.deleted(`${this.who} was deleted`)
      else this.problem(`${this.who}: not found; waiting for it to be created`, undefined)
      return
    }
    let pod: Pod
    try {
      pod = readPod(obj)
    } catch (e) {
      this.problem(`${this.who}: ${(e as Error).message}`, e)
      return
    }
    this.pod = pod
    if (pod.nodeName !== this.nodeName) this.followNode(pod.nodeName)
    this.emit()
  }

  private followNode(nodeName: string | undefined): void {
    this.nodeWatch?.stop()
    this.nodeWatch = undefined
    this.nodeName = nodeName
    this.node = {}
    this.nodeSettled = nodeName === undefined
    if (nodeName === undefined) {
      this.sink.info(`${this.who} is not scheduled yet: unset limits read the fallback allocatable until it is`)
      return
    }
    this.nodeWatch = new NamedWatch(this.kc, {
      what: `node ${nodeName}`,
      path: '/api/v1/nodes',
      name: nodeName,
      list: async () => {
        const l = await this.core.listNode({ fieldSelector: `metadata.name=${nodeName}` })
        return { items: l.items, resourceVersion: l.metadata?.resourceVersion ?? '' }
      },
    }, {
      object: (obj) => this.nodeChanged(nodeName, obj),
      problem: (msg, err) => {
        // Without its node the pod can still be served: with the last allocatable seen, or else
        // the fallback.
        const fallback = this.node.allocatable === undefined
        if (!this.nodeSettled) { this.nodeSettled = true; this.emit() }
        this.problem(fallback ? `${msg} (unset limits read the fallback allocatable)` : msg, err)
      },
    })
    this.nodeWatch.start()
  }

  private nodeChanged(nodeName: string, obj: unknown): void {
    if (nodeName !== this.nodeName) return
    const node = nodeViewOf(nodeName, obj, (m) => this.sink.problem(m))
    this.node = node
    this.nodeSettled = true
    this.emit()
  }

  private emit(): void {
    if (!this.pod || !this.nodeSettled) return
    if (this.settle) {
      const { resolve } = this.settle
      this.settle = undefined
      this.live = true
      this.sink.update(this.pod, this.node)
      resolve()
      return
    }
    if (this.live) this.sink.update(this.pod, this.node)
  }
}
