// The command line: `dapifs render …` (and the commands later issues add). A usage or input
// error is one line on stderr and exit code 2; nothing else is printed for it.

import { readFile, mkdir } from 'node:fs/promises'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs, type ParseArgsConfig } from 'node:util'
import createDebug from 'debug'
import { Daemon } from './daemon.js'
import { parseId, readPodFile, readSettings, volumeOf, type InputFlags } from './input.js'
import { prepareMountpoint } from './mountpoint.js'
import { project, type Projection } from './projection.js'
import { InputError } from './shape.js'
import { FileSource } from './source/file.js'

export class UsageError extends InputError {}

const USAGE = `usage:
  dapifs mount MOUNTPOINT --pod-file FILE [--volume NAME] [--items FILE]
                [--node-allocatable cpu=Q,memory=Q,ephemeral-storage=Q] [--fs-group GID]
                [--uid UID] [--gid GID] [--debug]
      Serve the pod's downward API volume at MOUNTPOINT until SIGINT or SIGTERM, following
      changes to FILE.
  dapifs render --pod-file FILE [--volume NAME] [--items FILE]
                [--node-allocatable cpu=Q,memory=Q,ephemeral-storage=Q] [--fs-group GID]
      Print the files the kubelet would write for the pod's downward API volume, as JSON.
  dapifs demo [MOUNTPOINT]
      Mount the example pod (examples/dapi-volume.yaml) at MOUNTPOINT (default /tmp/dapifs-demo).
  dapifs help
      Show this.`
const COMMANDS = 'mount, render, demo, help'

const INPUT_OPTIONS = {
  'pod-file': { type: 'string' },
  volume: { type: 'string' },
  items: { type: 'string' },
  'node-allocatable': { type: 'string' },
  'fs-group': { type: 'string' },
} as const satisfies ParseArgsConfig['options']

const MOUNT_OPTIONS = {
  ...INPUT_OPTIONS,
  uid: { type: 'string' },
  gid: { type: 'string' },
  debug: { type: 'boolean' },
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

function inputFlags(v: Values): InputFlags {
  const s = (k: string): string | undefined => (typeof v[k] === 'string' ? (v[k] as string) : undefined)
  const flags: InputFlags = {}
  const podFile = s('pod-file'); if (podFile !== undefined) flags.podFile = podFile
  const volume = s('volume'); if (volume !== undefined) flags.volume = volume
  const items = s('items'); if (items !== undefined) flags.items = items
  const na = s('node-allocatable'); if (na !== undefined) flags.nodeAllocatable = na
  const fg = s('fs-group'); if (fg !== undefined) flags.fsGroup = fg
  return flags
}

/** The JSON `render` prints: `{"files": {"<path>": {"content": "…", "mode": "0644"}}}`. */
export function renderJson(p: Projection): string {
  const files: Record<string, { content: string; mode: string }> = {}
  for (const f of p.files) files[f.path] = { content: f.data.toString('utf8'), mode: f.mode.toString(8).padStart(4, '0') }
  return JSON.stringify(p.gid !== undefined ? { files, gid: p.gid } : { files }, null, 2) + '\n'
}

const say = (line: string): void => { process.stderr.write(`dapifs: ${line}\n`) }

/** allow_other needs root, or user_allow_other in /etc/fuse.conf. */
async function canAllowOther(): Promise<boolean> {
  if (process.getuid?.() === 0) return true
  const conf = await readFile('/etc/fuse.conf', 'utf8').catch(() => '')
  return /^\s*user_allow_other\b/m.test(conf)
}

/** Mounts and serves until SIGINT or SIGTERM; resolves with the exit code. */
async function serve(mountpoint: string, flags: InputFlags, v: Values, hint?: (mnt: string) => string): Promise<number> {
  if (flags.podFile === undefined) throw new UsageError('--pod-file', 'is required: the pod to serve (YAML or JSON)')
  if (v.debug) createDebug.enable('dapifs:*')
  const settings = await readSettings(flags)
  const uid = typeof v.uid === 'string' ? parseId(v.uid, '--uid') : undefined
  const gid = typeof v.gid === 'string' ? parseId(v.gid, '--gid') : undefined
  const pod = await readPodFile(flags.podFile)
  const allowOther = await canAllowOther()
  const daemon = new Daemon({
    mountpoint, settings, say, allowOther,
    ...(uid !== undefined ? { uid } : {}), ...(gid !== undefined ? { gid } : {}),
  })
  try {
    daemon.apply(pod) // a pod that cannot be served is refused before anything is mounted
  } catch (e) {
    if (e instanceof InputError && !e.where.startsWith('--')) throw new InputError(flags.podFile, e.message)
    throw e
  }
  if (await prepareMountpoint(mountpoint)) say(`${mountpoint}: unmounted a stale mount left by a daemon that died`)
  try {
    await daemon.start(pod)
  } catch (e) {
    throw new InputError(mountpoint, `cannot mount: ${(e as Error).message}`)
  }
  const source = new FileSource(flags.podFile, daemon)
  source.start()
  const gen = daemon.generation!
  const volume = settings.items ? '--items' : volumeOf(pod, settings).name
  say(`ready: serving volume ${JSON.stringify(volume)} of pod ${pod.namespace}/${pod.name} at ${mountpoint} ` +
    `(${gen.name}, ${gen.projection.files.length} files); following ${flags.podFile}`)
  if (!allowOther) say('only this user can read the mount: allow_other needs root or user_allow_other in /etc/fuse.conf')
  if (hint) process.stderr.write(hint(mountpoint))
  return new Promise((resolve) => {
    const stop = (signal: string): void => {
      say(`${signal}: unmounting ${mountpoint}`)
      source.stop()
      // fuse-native's unmount can stall joining its thread after the kernel side is gone.
      const timer = setTimeout(() => resolve(0), 3000)
      daemon.stop().then(() => { clearTimeout(timer); resolve(0) }, (e: Error) => {
        say(`unmount failed: ${e.message}`)
        clearTimeout(timer)
        resolve(1)
      })
    }
    process.once('SIGINT', () => stop('SIGINT'))
    process.once('SIGTERM', () => stop('SIGTERM'))
  })
}

async function mountCommand(args: string[]): Promise<number> {
  const [v, [mountpoint]] = parse(args, MOUNT_OPTIONS, 1)
  if (mountpoint === undefined) throw new UsageError('', 'mount needs a MOUNTPOINT: dapifs mount MOUNTPOINT --pod-file FILE')
  return serve(mountpoint, inputFlags(v), v)
}

const EXAMPLE = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'examples', 'dapi-volume.yaml')

async function demo(args: string[]): Promise<number> {
  const [v, [where]] = parse(args, { debug: { type: 'boolean' } }, 1)
  const mnt = path.resolve(where ?? '/tmp/dapifs-demo')
  await mkdir(mnt, { recursive: true }).catch(() => {}) // a stale mount there is dealt with by serve
  const example = path.relative(process.cwd(), EXAMPLE) || EXAMPLE
  return serve(mnt, { podFile: example }, v, (m) => `
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

async function render(args: string[]): Promise<void> {
  const flags = inputFlags(parse(args, INPUT_OPTIONS)[0])
  if (flags.podFile === undefined) throw new UsageError('--pod-file', 'is required: the pod to render (YAML or JSON)')
  const settings = await readSettings(flags)
  const pod = await readPodFile(flags.podFile)
  let projection: Projection
  try {
    projection = project(pod, volumeOf(pod, settings), settings)
  } catch (e) {
    if (e instanceof InputError && !(e instanceof UsageError) && !e.where.startsWith('--')) {
      throw new InputError(flags.podFile, e.message)
    }
    throw e
  }
  process.stdout.write(renderJson(projection))
}

export async function main(argv: string[]): Promise<number> {
  const [command, ...args] = argv
  try {
    switch (command) {
      case 'mount':
        return await mountCommand(args)
      case 'demo':
        return await demo(args)
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
    if (e instanceof InputError) {
      process.stderr.write(`dapifs: ${e.message.replace(/\n/g, ' ')}\n`)
      return 2
    }
    // A bug, not bad input: still one line, the stack only when debugging.
    process.stderr.write(`dapifs: internal error: ${(e as Error).message}\n`)
    if (process.env.DEBUG) process.stderr.write(`${(e as Error).stack}\n`)
    return 1
  }
}
