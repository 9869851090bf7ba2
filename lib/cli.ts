// The command line: mount, render, demo, help. A usage or input error is one line on stderr
// and exit code 2; nothing else is printed for it.
//
// Each command loads what it needs when it runs, and nothing before: `dapifs csi` after a crash
// serves its volumes again as soon as it has loaded its own modules (csi/command.ts), and the
// modules of mount and render are not among them.

import { mkdir } from 'node:fs/promises'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs, type ParseArgsConfig } from 'node:util'
import type { InputFlags, Settings } from './volume/input.js'
import type { Pod } from './volume/pod.js'
import type { Projection } from './volume/projection.js'
import type { ServeFlags } from './serve.js'
import { InputError } from './volume/shape.js'
import { failure } from './logline.js'
import { NEWEST, SUPPORTED } from './volume/release.js'

export class UsageError extends InputError {}

const INPUTS = `(--pod-file FILE | --pod NAMESPACE/NAME [--kubeconfig FILE] [--context NAME])
                [--volume NAME] [--items FILE] [--fs-group GID]
                [--node-allocatable cpu=Q,memory=Q,ephemeral-storage=Q] [--node-labels KEY=VALUE,...]
                [--budget items=N,file=BYTES,volume=BYTES] [--kubelet-version 1.MINOR]`
const USAGE = `usage:
  dapifs mount MOUNTPOINT ${INPUTS}
                [--uid UID] [--gid GID] [--no-wait] [--exit-on-delete] [--no-inotify]
                [--count-requests] [--debug]
      Serve the pod's downward API volume at MOUNTPOINT until SIGINT or SIGTERM, following
      the pod file, or the pod in its cluster.
  dapifs render ${INPUTS}
      Print the files the kubelet would write for the pod's downward API volume, as JSON.
      --kubelet-version: the kubelet to render and flip as, ${SUPPORTED} (default ${NEWEST.name});
      docs/exactness.md says what differs between releases.
  dapifs csi --endpoint unix:///PATH/csi.sock --node-name NODE [--kubeconfig FILE] [--context NAME]
                [--registration-dir DIR | --no-registration] [--no-extensions]
                [--keeper SOCKET | --no-keeper] [--handover SOCKET] [--state-dir DIR] [--kubelet-dir DIR]
                [--budget KEY=VALUE,...] [--node-label-keys KEY,...]
                [--http-endpoint ADDR:PORT] [--log-format text|json] [--debug]
      Serve the CSI node driver csi.dapifs.dev for every pod on NODE: a dapifs volume per CSI
      ephemeral inline volume, registered with the kubelet through DIR (default
      plugins_registry in the kubelet's directory, --kubelet-dir, default /var/lib/kubelet).
      --budget: what a pod may ask for (docs/running-in-a-cluster.md, "What a pod can do to the node agent");
      --node-label-keys: the Node's labels pods may read (default: its zone and region). Mounts survive a restart through the
      keeper (dapifs-keeper) at SOCKET and the records in DIR (default: keeper.sock and
      volumes/ beside the CSI socket); a newer agent takes them over from this one through
      --handover (default: handover.sock beside it), with no pause. --http-endpoint: /metrics, /healthz and /livez on
      ADDR:PORT (:9810 for every address); --log-format json: one JSON object a line
      (docs/observability.md). docs/running-in-a-cluster.md.
  dapifs demo [MOUNTPOINT]
      Mount the example pod (examples/dapi-volume.yaml) at MOUNTPOINT (default /tmp/dapifs-demo).
  dapifs help
      Show this.`
const COMMANDS = 'mount, render, csi, demo, help'

const INPUT_OPTIONS = {
  'pod-file': { type: 'string' },
  pod: { type: 'string' },
  kubeconfig: { type: 'string' },
  context: { type: 'string' },
  volume: { type: 'string' },
  items: { type: 'string' },
  'node-allocatable': { type: 'string' },
  'node-labels': { type: 'string' },
  'fs-group': { type: 'string' },
  budget: { type: 'string' },
  'kubelet-version': { type: 'string' },
} as const satisfies ParseArgsConfig['options']

const MOUNT_OPTIONS = {
  ...INPUT_OPTIONS,
  uid: { type: 'string' },
  gid: { type: 'string' },
  debug: { type: 'boolean' },
  'no-wait': { type: 'boolean' },
  'exit-on-delete': { type: 'boolean' },
  'no-inotify': { type: 'boolean' },
  'count-requests': { type: 'boolean' },
} as const satisfies ParseArgsConfig['options']

type Values = Record<string, string | boolean | undefined>

/** Parses flags and up to `maxPositionals` positional arguments. */
function parse(args: string[], options: ParseArgsConfig['options'], maxPositionals = 0): [Values, string[]] {
  try {
    const r = parseArgs({ args, options, strict: true, allowPositionals: true })
    if (r.positionals.length > maxPositionals) {
      throw new UsageError('', `unexpected argument ${JSON.stringify(r.positionals[maxPositionals])}`)
    }
    return [r.values as Values, r.positionals]
  } catch (e) {
    if (e instanceof UsageError) throw e
    // parseArgs says e.g. "Unknown option '--pod'. To specify a positional argument…": keep the first sentence.
    const first = (e as Error).message.split(/\.\s/)[0]!.replace(/\.$/, '')
    throw new UsageError('', first)
  }
}

const FLAG_KEYS: [string, keyof InputFlags][] = [
  ['pod-file', 'podFile'], ['pod', 'pod'], ['kubeconfig', 'kubeconfig'], ['context', 'context'], ['volume', 'volume'],
  ['items', 'items'], ['node-allocatable', 'nodeAllocatable'], ['node-labels', 'nodeLabels'], ['fs-group', 'fsGroup'],
  ['budget', 'budget'], ['kubelet-version', 'kubeletVersion'],
]

function inputFlags(v: Values): InputFlags {
  const flags: InputFlags = {}
  for (const [flag, key] of FLAG_KEYS) if (typeof v[flag] === 'string') flags[key] = v[flag] as string
  return flags
}

/** The JSON `render` prints: `{"files": {"<path>": {"content": "…", "mode": "0644"}}}`. */
export function renderJson(p: Projection): string {
  const files: Record<string, { content: string; mode: string }> = {}
  for (const f of p.files) files[f.path] = { content: f.data.toString('utf8'), mode: f.mode.toString(8).padStart(4, '0') }
  return JSON.stringify(p.gid !== undefined ? { files, gid: p.gid } : { files }, null, 2) + '\n'
}

async function renderPod(pod: Pod, settings: Settings, where: string): Promise<Projection> {
  const { renderVolume } = await import('./volume/input.js')
  try {
    return renderVolume(pod, settings)
  } catch (e) {
    if (e instanceof InputError && !e.where.startsWith('--')) throw new InputError(where, e.message)
    throw e
  }
}

/** One look at the pod in its cluster (and its node, for allocatable). */
async function clusterPod(flags: InputFlags, settings: Settings): Promise<Projection> {
  // Loaded only here: @kubernetes/client-node takes most of a second to load.
  const { CoreV1Api } = await import('@kubernetes/client-node')
  const { loadKubeConfig, parsePodRef } = await import('./source/kube.js')
  const { describeError } = await import('./source/watch.js')
  const { readPod } = await import('./volume/pod.js')
  const { allocatableFromNode, nodeLabels } = await import('./volume/allocatable.js')
  const ref = parsePodRef(flags.pod!)
  const { kc, context } = loadKubeConfig(flags)
  const who = `pod ${ref.namespace}/${ref.name} (context ${context})`
  const core = kc.makeApiClient(CoreV1Api)
  let raw: unknown
  try {
    raw = await core.readNamespacedPod({ namespace: ref.namespace, name: ref.name })
  } catch (e) {
    throw new InputError(who, describeError(e, 'get'))
  }
  let pod: Pod
  try { pod = readPod(raw) } catch (e) { throw new InputError(who, (e as Error).message) }
  if (pod.nodeName) {
    try {
      const node = await core.readNode({ name: pod.nodeName })
      settings = { ...settings, nodeLabels: nodeLabels(node) }
      if (flags.nodeAllocatable === undefined) settings.allocatable = allocatableFromNode(node.status?.allocatable as Record<string, unknown> | undefined)
    } catch (e) {
      if (e instanceof InputError) throw new InputError(who, e.message)
      process.stderr.write(`dapifs: node ${pod.nodeName}: ${describeError(e, 'get')}; unset limits read ${flags.nodeAllocatable !== undefined ? '--node-allocatable' : 'this machine\'s allocatable'}, and the node's labels read empty\n`)
    }
  }
  return renderPod(pod, settings, who)
}

async function render(args: string[]): Promise<void> {
  const flags = inputFlags(parse(args, INPUT_OPTIONS)[0])
  if (flags.podFile !== undefined && flags.pod !== undefined) throw new InputError('--pod', 'cannot be combined with --pod-file')
  if (flags.podFile === undefined && flags.pod === undefined) throw new UsageError('', 'one of --pod-file FILE or --pod NAMESPACE/NAME is required: the pod to render')
  const { parsePodText, readSettings, readText } = await import('./volume/input.js')
  const settings = await readSettings(flags)
  const projection = flags.podFile !== undefined
    ? await renderPod(parsePodText(await readText(flags.podFile, '--pod-file'), flags.podFile), settings, flags.podFile)
    : await clusterPod(flags, settings)
  // main's process.exit() would cut a piped output short at the pipe's buffer: wait for it.
  await new Promise<void>((resolve, reject) => process.stdout.write(renderJson(projection), (e) => (e ? reject(e) : resolve())))
}

async function mountCommand(args: string[]): Promise<number> {
  const [v, [mountpoint]] = parse(args, MOUNT_OPTIONS, 1)
  if (mountpoint === undefined) throw new UsageError('', 'mount needs a MOUNTPOINT: dapifs mount MOUNTPOINT --pod-file FILE')
  const [{ parseId }, { serve }] = await Promise.all([import('./volume/input.js'), import('./serve.js')])
  const flags: ServeFlags = inputFlags(v)
  if (typeof v.uid === 'string') flags.uid = parseId(v.uid, '--uid')
  if (typeof v.gid === 'string') flags.gid = parseId(v.gid, '--gid')
  if (v.debug) flags.debug = true
  if (v['no-wait']) flags.noWait = true
  if (v['exit-on-delete']) flags.exitOnDelete = true
  if (v['no-inotify']) flags.noInotify = true
  if (v['count-requests']) flags.countRequests = true
  return serve(mountpoint, flags)
}

const CSI_OPTIONS = {
  endpoint: { type: 'string' },
  'node-name': { type: 'string' },
  kubeconfig: { type: 'string' },
  context: { type: 'string' },
  'registration-dir': { type: 'string' },
  'no-registration': { type: 'boolean' },
  'no-extensions': { type: 'boolean' },
  keeper: { type: 'string' },
  'no-keeper': { type: 'boolean' },
  handover: { type: 'string' },
  'state-dir': { type: 'string' },
  'kubelet-dir': { type: 'string' },
  budget: { type: 'string' },
  'node-label-keys': { type: 'string' },
  'http-endpoint': { type: 'string' },
  'log-format': { type: 'string' },
  debug: { type: 'boolean' },
} as const satisfies ParseArgsConfig['options']

async function csi(args: string[]): Promise<number> {
  const [v] = parse(args, CSI_OPTIONS)
  const { csiCommand } = await import('./csi/command.js')
  const flags: import('./csi/command.js').CsiFlags = {}
  for (const [flag, key] of [['endpoint', 'endpoint'], ['node-name', 'nodeName'], ['kubeconfig', 'kubeconfig'], ['context', 'context'], ['registration-dir', 'registrationDir'], ['keeper', 'keeper'], ['handover', 'handover'], ['state-dir', 'stateDir'], ['kubelet-dir', 'kubeletDir'], ['budget', 'budget'], ['node-label-keys', 'nodeLabelKeys'], ['http-endpoint', 'httpEndpoint'], ['log-format', 'logFormat']] as const) {
    if (typeof v[flag] === 'string') flags[key] = v[flag] as string
  }
  if (v['no-registration']) flags.noRegistration = true
  if (v['no-extensions']) flags.noExtensions = true
  if (v['no-keeper']) flags.noKeeper = true
  if (v.debug) flags.debug = true
  return csiCommand(flags)
}

const EXAMPLE = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'examples', 'dapi-volume.yaml')

async function demo(args: string[]): Promise<number> {
  const [v, [where]] = parse(args, { debug: { type: 'boolean' } }, 1)
  const mnt = path.resolve(where ?? '/tmp/dapifs-demo')
  await mkdir(mnt, { recursive: true }).catch(() => {}) // a stale mount there is dealt with by serve
  const example = path.relative(process.cwd(), EXAMPLE) || EXAMPLE
  const { serve } = await import('./serve.js')
  return serve(mnt, { podFile: example, ...(v.debug ? { debug: true } : {}) }, (m) => `
Try, in another terminal:
  ls -la ${m}
  cat ${m}/labels; echo
  readlink ${m}/..data
  stat -c '%A %U:%G %s %n' ${m}/..data/*
Then change a label or an annotation in ${example} and save:
..data flips to a new directory, and cat shows the new bytes.
Stop with Ctrl-C (SIGINT) or SIGTERM: it unmounts.
`)
}

export async function main(argv: string[]): Promise<number> {
  const [command, ...args] = argv
  try {
    switch (command) {
      case 'mount':
        return await mountCommand(args)
      case 'demo':
        return await demo(args)
      case 'csi':
        return await csi(args)
      case 'render':
        await render(args)
        return 0
      case 'help': case '--help': case '-h':
        process.stdout.write(USAGE + '\n')
        return 0
      case undefined:
        throw new UsageError('', `a command is required (${COMMANDS})`)
      default:
        throw new UsageError('', `unknown command ${JSON.stringify(command)} (commands: ${COMMANDS})`)
    }
  } catch (e) {
    const { line, code } = failure(e)
    process.stderr.write(`dapifs: ${line}\n`)
    // A bug, not bad input: still one line, the stack only when debugging.
    if (code === 1 && process.env.DEBUG) process.stderr.write(`${(e as Error).stack}\n`)
    return code
  }
}
