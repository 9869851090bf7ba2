// `dapifs csi`: the node agent's life.
//   1. Check the flags and the credentials (a bad one: one line, exit 2).
//   2. Take back the volumes an earlier process served (Volumes.recover: their connections from
//      the keeper, their records from the state directory), first of all.
//   3. Start the node's two watches (its pods, and the Node), and serve CSI on the endpoint at
//      once: a publish that comes before the pods are listed waits for them.
//   4. Register with the kubelet through its registration directory (unless --no-registration,
//      for the standard node-driver-registrar sidecar).
//   5. On SIGINT or SIGTERM: stop registering and serving; leave every volume mounted, to the
//      keeper and the next process (or, with no keeper there, unmount them); exit 0.

import { readFileSync } from 'node:fs'
import path from 'node:path'
import createDebug from 'debug'
import { oneLine } from '../logline.js'
import { AGENT_BUDGET_KEYS, DEFAULT_AGENT_BUDGET, parseBudgetFlag } from '../volume/budget.js'
import { DEFAULT_NODE_LABEL_KEYS, type NodeLabelKeys } from '../volume/extensions.js'
import { qualifiedNameErrors } from '../volume/fieldpath.js'
import { InputError } from '../volume/shape.js'
import { DRIVER_NAME, socketPath } from './endpoint.js'
import type { RegistrationServer } from './server.js'
import { nativeLayer } from '../fs/mount.js'
import { Keeper } from './keeper.js'
import { VolumeStore } from './state.js'
import { Volumes } from './volumes.js'

export interface CsiFlags {
  endpoint?: string
  nodeName?: string
  kubeconfig?: string
  context?: string
  registrationDir?: string
  noRegistration?: boolean
  /** Refuse the extensions (docs/extensions.md): --no-extensions. */
  noExtensions?: boolean
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
  debug?: boolean
}

export const DEFAULT_KUBELET_DIR = '/var/lib/kubelet'

const say = (line: string): void => { process.stderr.write(`dapifs csi: ${oneLine(line)}\n`) }

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
  if (flags.endpoint === undefined) throw new InputError('--endpoint', 'is required: unix:///var/lib/kubelet/plugins/csi.dapifs.dev/csi.sock, the socket the kubelet dials')
  const socket = socketPath(flags.endpoint)
  if (!socket) throw new InputError('--endpoint', `${JSON.stringify(flags.endpoint)} is not a unix socket (unix:///ABSOLUTE/PATH)`)
  if (flags.nodeName === undefined) throw new InputError('--node-name', 'is required: the name of the Node this agent serves (in a DaemonSet, from the downward API: spec.nodeName)')
  if (!NODE_NAME.test(flags.nodeName) || flags.nodeName.length > 253) throw new InputError('--node-name', `${JSON.stringify(flags.nodeName)} is not a node name (a lowercase DNS name)`)
  if (flags.noRegistration && flags.registrationDir !== undefined) throw new InputError('--no-registration', 'cannot be combined with --registration-dir')
  if (flags.noKeeper && flags.keeper !== undefined) throw new InputError('--no-keeper', 'cannot be combined with --keeper')
  if (flags.keeper !== undefined && !path.isAbsolute(flags.keeper)) throw new InputError('--keeper', `${JSON.stringify(flags.keeper)} is not an absolute path (the keeper's unix socket)`)
  if (flags.stateDir !== undefined && !path.isAbsolute(flags.stateDir)) throw new InputError('--state-dir', `${JSON.stringify(flags.stateDir)} is not an absolute path`)
  if (flags.kubeletDir !== undefined && !path.isAbsolute(flags.kubeletDir)) throw new InputError('--kubelet-dir', `${JSON.stringify(flags.kubeletDir)} is not an absolute path (the kubelet's --root-dir)`)
  const kubeletDir = path.resolve(flags.kubeletDir ?? DEFAULT_KUBELET_DIR)
  const budget = flags.budget === undefined ? DEFAULT_AGENT_BUDGET : parseBudgetFlag(flags.budget, AGENT_BUDGET_KEYS, DEFAULT_AGENT_BUDGET)
  const nodeLabelKeys = flags.nodeLabelKeys === undefined ? new Set(DEFAULT_NODE_LABEL_KEYS) : parseNodeLabelKeys(flags.nodeLabelKeys)
  if (flags.debug) createDebug.enable('dapifs:*,-dapifs:requests')
  const nodeName = flags.nodeName

  // fuse-native's prebuilt addon (the fallback: docs/cli.md, Installing) can neither hand a mount over
  // nor take one.
  const handOver = nativeLayer()
  if (!handOver && !flags.noKeeper) say('fuse-native\'s prebuilt libfuse 2 addon is in use: no keeper, so volumes end with this process (build the native layer: node lib/native/build.mjs)')
  const keeperSocket = flags.noKeeper || !handOver ? undefined : flags.keeper ?? path.join(path.dirname(socket), 'keeper.sock')
  let volumes: Volumes | undefined
  const keeper = keeperSocket === undefined ? undefined : new Keeper(keeperSocket, { say, reconnected: () => volumes?.rekeep() })
  const store = new VolumeStore(flags.stateDir ?? path.join(path.dirname(socket), 'volumes'))
  volumes = new Volumes({
    say, allowOther: process.getuid?.() === 0, extensions: !flags.noExtensions,
    store, ...(keeper ? { keeper } : {}), kubeletDir, budget, nodeLabelKeys,
  })
  // Before anything else, and before the Kubernetes client loads (seconds, on a busy node): a
  // restart's pause, for the pods' readers, lasts until their volumes are served again.
  await volumes.recover()

  // Loaded only here: gRPC, and @kubernetes/client-node, which takes most of a second to load.
  const { CsiServer, RegistrationServer } = await import('./server.js')
  const { loadKubeConfig } = await import('../source/kube.js')
  const { NodeSource } = await import('../source/node.js')
  const { kc, context } = loadKubeConfig(flags, 'csi')
  const source = new NodeSource(kc, nodeName, { problem: say, info: say })
  volumes.follow(source)
  const csi = new CsiServer(volumes, { nodeName, version: version(), ready: () => source.synced })
  source.start()
  let registration: RegistrationServer | undefined
  try {
    await keeper?.start()
    await csi.listen(socket)
    if (!flags.noRegistration) {
      registration = new RegistrationServer(flags.registrationDir ?? path.join(kubeletDir, 'plugins_registry'), socket, (ok, error) => {
        say(ok ? `registered with the kubelet as ${DRIVER_NAME}` : `the kubelet refused the registration: ${error}`)
      })
      await registration.listen()
    }
  } catch (e) {
    source.stop()
    keeper?.stop()
    await csi.stop()
    throw e instanceof InputError ? e : new InputError(socket, `cannot serve: ${(e as Error).message}`)
  }
  const synced = new Promise<void>((resolve) => {
    if (source.synced) return resolve()
    const stop = source.listen(() => { if (source.synced) { stop(); resolve() } })
  })
  say(`serving ${DRIVER_NAME} for node ${nodeName} (context ${context}) on ${socket}` +
    (flags.noExtensions ? '; extensions refused (--no-extensions)' : '') +
    (keeper ? `; keeper at ${keeper.socket}` : '; no keeper: volumes end with this process') +
    (registration ? `; registration at ${registration.socket}` : ' (no registration socket: use node-driver-registrar)'))
  void synced.then(() => say(`following ${source.size} pods on node ${nodeName}`))

  return new Promise((resolve) => {
    let stopping = false
    const stop = (why: string): void => {
      if (stopping) return
      stopping = true
      const leave = keeper?.connected === true
      say(leave ? `${why}: leaving ${volumes!.size} volumes mounted, their connections with the keeper` : `${why}: unmounting ${volumes!.size} volumes`)
      void (async () => {
        await registration?.stop()
        await csi.stop()
        if (leave) await volumes!.detach()
        else await volumes!.stop()
        keeper?.stop()
        source.stop()
        resolve(0)
      })()
    }
    process.once('SIGINT', () => stop('SIGINT'))
    process.once('SIGTERM', () => stop('SIGTERM'))
  })
}
