// `dapifs csi`: the node agent's life.
//   1. Check the flags and the credentials (a bad one: one line, exit 2).
//   2. Take back the volumes an earlier process served (Volumes.recover: their connections from
//      the keeper, their records from the state directory), first of all. If that process still
//      serves them (an upgrade with maxSurge), load everything first, then ask it to let go, on
//      the handover socket (handover.ts); if an agent without a handover socket serves the CSI
//      socket, wait until it has stopped.
//   3. Start the node's two watches (its pods, and the Node), and serve CSI on the endpoint at
//      once: a publish that comes before the pods are listed waits for them.
//   4. Register with the kubelet through its registration directory (unless --no-registration,
//      for the standard node-driver-registrar sidecar), and serve /metrics, /healthz and /livez
//      on --http-endpoint if it is given (observe/http.ts).
//   5. On SIGINT or SIGTERM: stop registering and serving; leave every volume mounted, to the
//      keeper and the next process (or, with no keeper there, unmount them); exit 0. A newer
//      agent's LET GO on the handover socket is the same, but the process then waits, serving
//      nothing, for its SIGTERM.
// What operators watch (docs/observability.md): the log (text, or JSON with --log-format json),
// the metrics and health on the HTTP endpoint, and Warning events on the pods whose updates the
// agent did not serve (observe/events.ts).

import { readFileSync } from 'node:fs'
import path from 'node:path'
import createDebug from 'debug'
import { LOG_FORMATS, failure, jsonLine, stderrSay, type LogFormat, type Say } from '../logline.js'
import { AGENT_BUDGET_KEYS, DEFAULT_AGENT_BUDGET, parseBudgetFlag } from '../volume/budget.js'
import { DEFAULT_NODE_LABEL_KEYS, type NodeLabelKeys } from '../volume/extensions.js'
import { qualifiedNameErrors } from '../volume/fieldpath.js'
import { InputError } from '../volume/shape.js'
import { DRIVER_NAME, socketPath } from './endpoint.js'
import { nativeLayer } from '../fs/mount.js'
import { Keeper } from './keeper.js'
import { VolumeStore } from './state.js'
import { Volumes, type VolumesObserver } from './volumes.js'
import { HandoverClient, HandoverServer, waitForOldAgent } from './handover.js'
import { HttpEndpoint, parseHttpEndpoint, type Endpoint } from '../observe/http.js'
import type { Metrics } from '../observe/metrics.js'
import type { PodEvents } from '../observe/events.js'

export interface CsiFlags {
  endpoint?: string
  nodeName?: string
  kubeconfig?: string
  context?: string
  registrationDir?: string
  noRegistration?: boolean
  /** Refuse the extensions (docs/extensions.md): --no-extensions. */
  noExtensions?: boolean
  /** The handover socket (handover.ts; default: handover.sock beside the CSI socket). */
  handover?: string
  /** The keeper's socket (default: keeper.sock beside the CSI socket). */
  keeper?: string
  noKeeper?: boolean
  /** Where volume records are kept (default: volumes/ beside the CSI socket). */
  stateDir?: string
  /** The kubelet's root directory (its --root-dir). */
  kubeletDir?: string
  /** --budget KEY=VALUE,... (volume/budget.ts). */
  budget?: string
  /** --node-label-keys KEY,... | '*' | '' (extensions.ts, DEFAULT_NODE_LABEL_KEYS). */
  nodeLabelKeys?: string
  /** --http-endpoint ADDR:PORT: /metrics, /healthz and /livez (observe/http.ts); off when absent. */
  httpEndpoint?: string
  /** --log-format text|json (logline.ts). */
  logFormat?: string
  debug?: boolean
}

export const DEFAULT_KUBELET_DIR = '/var/lib/kubelet'
/** How long a new agent waits for the HTTP port an old one had. */
const PORT_WAIT_MS = 10_000

let say: Say = stderrSay('text', 'dapifs csi: ')

function version(): string {
  try {
    return (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version
  } catch {
    return 'unknown'
  }
}

const NODE_NAME = /^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/

/** `--node-label-keys`: label keys (KEY,...), '*' for all of them, '' for none. */
function parseNodeLabelKeys(text: string): NodeLabelKeys {
  if (text.trim() === '*') return 'all'
  const keys = new Set<string>()
  for (const key of text.split(',').map((k) => k.trim()).filter(Boolean)) {
    const errs = qualifiedNameErrors(key)
    if (errs.length > 0) throw new InputError('--node-label-keys', `${JSON.stringify(key)} is not a label key: ${errs.join(';')} (or '*' for every key, '' for none)`)
    keys.add(key)
  }
  return keys
}

export async function csiCommand(flags: CsiFlags): Promise<number> {
  if (flags.logFormat !== undefined && !LOG_FORMATS.includes(flags.logFormat as LogFormat)) {
    throw new InputError('--log-format', `${JSON.stringify(flags.logFormat)} is not a log format (${LOG_FORMATS.join(' or ')})`)
  }
  const format = (flags.logFormat ?? 'text') as LogFormat
  say = stderrSay(format, 'dapifs csi: ')
  if (format === 'text') return run(flags)
  // In JSON, a refusal or a failure is a JSON line too.
  try {
    return await run(flags)
  } catch (e) {
    const { line, code } = failure(e)
    say(line, { level: 'error' }) // after the lines said before it
    return code
  }
}

async function run(flags: CsiFlags): Promise<number> {
  if (flags.endpoint === undefined) throw new InputError('--endpoint', 'is required: unix:///var/lib/kubelet/plugins/csi.dapifs.dev/csi.sock, the socket the kubelet dials')
  const socket = socketPath(flags.endpoint)
  if (!socket) throw new InputError('--endpoint', `${JSON.stringify(flags.endpoint)} is not a unix socket (unix:///ABSOLUTE/PATH)`)
  if (flags.nodeName === undefined) throw new InputError('--node-name', 'is required: the name of the Node this agent serves (in a DaemonSet, from the downward API: spec.nodeName)')
  if (!NODE_NAME.test(flags.nodeName) || flags.nodeName.length > 253) throw new InputError('--node-name', `${JSON.stringify(flags.nodeName)} is not a node name (a lowercase DNS name)`)
  if (flags.noRegistration && flags.registrationDir !== undefined) throw new InputError('--no-registration', 'cannot be combined with --registration-dir')
  if (flags.noKeeper && flags.keeper !== undefined) throw new InputError('--no-keeper', 'cannot be combined with --keeper')
  if (flags.handover !== undefined && !path.isAbsolute(flags.handover)) throw new InputError('--handover', `${JSON.stringify(flags.handover)} is not an absolute path (the handover's unix socket)`)
  if (flags.noKeeper && flags.handover !== undefined) throw new InputError('--no-keeper', 'cannot be combined with --handover (volumes are handed over through the keeper)')
  if (flags.keeper !== undefined && !path.isAbsolute(flags.keeper)) throw new InputError('--keeper', `${JSON.stringify(flags.keeper)} is not an absolute path (the keeper's unix socket)`)
  if (flags.stateDir !== undefined && !path.isAbsolute(flags.stateDir)) throw new InputError('--state-dir', `${JSON.stringify(flags.stateDir)} is not an absolute path`)
  if (flags.kubeletDir !== undefined && !path.isAbsolute(flags.kubeletDir)) throw new InputError('--kubelet-dir', `${JSON.stringify(flags.kubeletDir)} is not an absolute path (the kubelet's --root-dir)`)
  const kubeletDir = path.resolve(flags.kubeletDir ?? DEFAULT_KUBELET_DIR)
  const budget = flags.budget === undefined ? DEFAULT_AGENT_BUDGET : parseBudgetFlag(flags.budget, AGENT_BUDGET_KEYS, DEFAULT_AGENT_BUDGET)
  const nodeLabelKeys = flags.nodeLabelKeys === undefined ? new Set(DEFAULT_NODE_LABEL_KEYS) : parseNodeLabelKeys(flags.nodeLabelKeys)
  const httpAt: Endpoint | undefined = flags.httpEndpoint === undefined ? undefined : parseHttpEndpoint(flags.httpEndpoint)
  if (flags.debug) createDebug.enable('dapifs:*,-dapifs:requests')
  const nodeName = flags.nodeName

  // fuse-native's prebuilt addon (the fallback: docs/cli.md, Installing) can neither hand a mount over
  // nor take one.
  const handOver = nativeLayer()
  if (!handOver && !flags.noKeeper) say('fuse-native\'s prebuilt libfuse 2 addon is in use: no keeper, so volumes end with this process (build the native layer: node lib/native/build.mjs)', { level: 'warning' })
  const keeperSocket = flags.noKeeper || !handOver ? undefined : flags.keeper ?? path.join(path.dirname(socket), 'keeper.sock')
  let volumes: Volumes | undefined
  const keeper = keeperSocket === undefined ? undefined : new Keeper(keeperSocket, { say, reconnected: () => volumes?.rekeep() })
  const store = new VolumeStore(flags.stateDir ?? path.join(path.dirname(socket), 'volumes'))
  // prom-client loads after recover(), like gRPC: what a restart's readers wait for stays small.
  let metrics: Metrics | undefined
  // Events need the Kubernetes client, which loads after recover(): until then, none are posted.
  let events: PodEvents | undefined
  const observe: VolumesObserver = {
    flipped: () => metrics?.flipped(),
    updated: (seconds) => metrics?.updated(seconds),
    refused: () => metrics?.refused(),
    reported: (pod, volume, message, cause) => events?.warn({ pod, volume, message, cause }),
  }
  volumes = new Volumes({
    say, observe, allowOther: process.getuid?.() === 0, extensions: !flags.noExtensions,
    store, ...(keeper ? { keeper } : {}), kubeletDir, budget, nodeLabelKeys,
  })
  // A newer agent's start beside an old one still serving (a rollout with maxSurge): the old one
  // hands the volumes over (handover.ts). Everything slow is loaded before it is asked to.
  const handoverSocket = keeper === undefined ? undefined : flags.handover ?? path.join(path.dirname(socket), 'handover.sock')
  let loaded: ReturnType<typeof load> | undefined
  const prepare = (): ReturnType<typeof load> => (loaded ??= load(flags, nodeName, volumes!, httpAt, keeper, socket))
  const old = handoverSocket === undefined ? undefined : await HandoverClient.connect(handoverSocket)
  /** Whether an old agent ran beside this one: its port may take a moment to be free. */
  let replacing = old !== undefined
  if (old) {
    say(`an agent serves the volumes at ${handoverSocket}: taking them over from it once this one is ready`)
    // Loading (gRPC, the Kubernetes client) goes at the usual priority while the old agent still
    // serves: in a pod, a nice value weighs only against the agent's own threads (each pod is a
    // cgroup of its own), and beside busy readers in one cgroup a lowered load starved for 20 s.
    await prepare()
    const t0 = performance.now()
    const outcome = await old.letGo()
    say(outcome === 'handed' ? `the old agent let go of its volumes (${old.answer}) in ${(performance.now() - t0).toFixed(0)} ms: taking them over`
      : `the old agent stopped${old.answer ? ` (it said ${JSON.stringify(old.answer)})` : ''}: taking its volumes over`)
  } else if (keeper !== undefined) {
    // An agent of a release without the handover: never serve a mount beside it.
    replacing = await waitForOldAgent(socket, () => say(`another agent serves ${socket} without a handover socket (an earlier release): waiting for it to stop before taking its volumes over`))
  }
  // Before anything else, and before the Kubernetes client loads (seconds, on a busy node): a
  // restart's pause, for the pods' readers, lasts until their volumes are served again.
  await volumes.recover()
  const { metrics: m, csi, probe, source, events: ev, kc, context, RegistrationServer } = await prepare()
  metrics = m
  events = ev
  volumes.follow(source)
  const http = httpAt && new HttpEndpoint({
    metrics: metrics!,
    checks: [
      { run: () => handover?.replaced ? 'a newer agent is taking the volumes over' : undefined },
      { live: true, run: () => probe.check() },
      { run: () => source.podsSynced ? undefined : `the pods on node ${nodeName} have not been listed yet` },
      { run: () => source.nodeSynced ? undefined : `node ${nodeName} has not been read yet` },
      ...(keeper ? [{ run: () => keeper.connected ? undefined : `the keeper at ${keeper.socket} is not connected: volumes published now would not survive a restart of the agent` }] : []),
    ],
  })
  source.start()
  let registration: InstanceType<typeof RegistrationServer> | undefined
  let handover: HandoverServer | undefined
  let serving = ''
  try {
    await keeper?.start()
    await csi.listen(socket)
    if (http) {
      const at = replacing ? await listenWhenFree(http, httpAt!) : await http.listen(httpAt!)
      serving = `; /metrics, /healthz and /livez on ${at.address.includes(':') ? `[${at.address}]` : at.address}:${at.port}`
    }
    if (!flags.noRegistration) {
      registration = new RegistrationServer(flags.registrationDir ?? path.join(kubeletDir, 'plugins_registry'), socket, (ok, error) => {
        say(ok ? `registered with the kubelet as ${DRIVER_NAME}` : `the kubelet refused the registration: ${error}`, ok ? {} : { level: 'error' })
      })
      await registration.listen()
    }
    if (handoverSocket !== undefined) {
      handover = new HandoverServer(handoverSocket, () => letGo('a newer agent asked for the volumes'),
        (n) => say(`handed ${n} volumes over to the newer agent: serving nothing from now on; waiting for SIGTERM`))
      await handover.listen()
    }
  } catch (e) {
    source.stop()
    keeper?.stop()
    events.stop()
    probe.close()
    await http?.stop()
    await csi.stop()
    await handover?.close()
    throw e instanceof InputError ? e : new InputError(socket, `cannot serve: ${(e as Error).message}`)
  }
  const synced = new Promise<void>((resolve) => {
    if (source.synced) return resolve()
    const stop = source.listen(() => { if (source.synced) { stop(); resolve() } })
  })
  say(`serving ${DRIVER_NAME} for node ${nodeName} (context ${context}) on ${socket}` +
    (flags.noExtensions ? '; extensions refused (--no-extensions)' : '') +
    (keeper ? `; keeper at ${keeper.socket}` : '; no keeper: volumes end with this process') +
    (registration ? `; registration at ${registration.socket}` : ' (no registration socket: use node-driver-registrar)') + serving)
  void synced.then(() => say(`following ${source.size} pods on node ${nodeName}`))

  // Stops serving: the sockets and the port first (the volumes are still served meanwhile), then
  // the volumes, left to the keeper (or unmounted without one). Once; the volumes it served.
  let stopped: Promise<number> | undefined
  const letGo = (why: string): Promise<number> => {
    stopped ??= (async () => {
      const leave = keeper?.connected === true
      const n = volumes!.size
      say(leave ? `${why}: leaving ${n} volumes mounted, their connections with the keeper` : `${why}: unmounting ${n} volumes`)
      await registration?.stop()
      await http?.stop()
      probe.close()
      events!.stop()
      await csi.stop()
      if (leave) await volumes!.handOver()
      else await volumes!.stop()
      keeper?.stop()
      source.stop()
      return n
    })()
    return stopped
  }

  return new Promise((resolve) => {
    const stop = (why: string): void => {
      if (stopped) say(`${why}: exiting (the volumes are handed over, or being)`)
      // With a handover socket, through it: an agent connected meanwhile hears GONE.
      void (handover ? (letGo(why), handover.handOver()) : letGo(why)).then(() => resolve(0))
    }
    process.once('SIGINT', () => stop('SIGINT'))
    process.once('SIGTERM', () => stop('SIGTERM'))
  })
}

/** The slow part of a start, once: gRPC, the Kubernetes client, the metrics, and what they make. */
async function load(flags: CsiFlags, nodeName: string, volumes: Volumes, httpAt: Endpoint | undefined, keeper: Keeper | undefined, socket: string) {
  const metrics = httpAt ? new (await import('../observe/metrics.js')).Metrics({ volumes: () => volumes.size, ...(keeper ? { keeperConnected: () => keeper.connected } : {}) }) : undefined
  // Loaded only here: gRPC, and @kubernetes/client-node, which takes most of a second to load.
  const { CsiServer, RegistrationServer, SocketProbe } = await import('./server.js')
  const { loadKubeConfig } = await import('../source/kube.js')
  const { NodeSource } = await import('../source/node.js')
  const { podEventsFor } = await import('../observe/events.js')
  const { kc, context } = loadKubeConfig(flags, 'csi')
  const source = new NodeSource(kc, nodeName, { problem: (m) => say(m, { level: 'warning' }), info: (m) => say(m) },
    metrics && ((resource) => metrics.watch(resource)))
  const events = podEventsFor(kc, nodeName, say)
  const csi = new CsiServer(volumes, { nodeName, version: version(), ready: () => source.synced }, metrics)
  const probe = new SocketProbe(socket)
  return { metrics, csi, probe, source, events, kc, context, RegistrationServer }
}

/**
 * Listens on the HTTP endpoint after an old agent ran beside this one (the pods share the node's
 * network): it closes the port before it lets go, but a port still taken is waited for, up to
 * PORT_WAIT_MS. Other failures, and a port taken for longer, are the flag's (exit 2).
 */
async function listenWhenFree(http: HttpEndpoint, at: Endpoint): Promise<{ address: string; port: number }> {
  const until = performance.now() + PORT_WAIT_MS
  for (let said = false; ; said = true) {
    try {
      return await http.listen(at)
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EADDRINUSE' || performance.now() > until) throw e
      if (!said) say(`${(e as InputError).problem}: waiting for the port (an old agent still has it?)`, { level: 'warning' })
      await new Promise((resolve) => setTimeout(resolve, 200))
    }
  }
}
