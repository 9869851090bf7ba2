// The command line: `dapifs render …` (and the commands later issues add). A usage or input
// error is one line on stderr and exit code 2; nothing else is printed for it.

import { parseArgs, type ParseArgsConfig } from 'node:util'
import { readPodFile, readSettings, volumeOf, type InputFlags } from './input.js'
import { project, type Projection } from './projection.js'
import { InputError } from './shape.js'

export class UsageError extends InputError {}

const USAGE = `usage:
  dapifs render --pod-file FILE [--volume NAME] [--items FILE]
                [--node-allocatable cpu=Q,memory=Q,ephemeral-storage=Q] [--fs-group GID]
      Print the files the kubelet would write for the pod's downward API volume, as JSON.
  dapifs help
      Show this.`

const INPUT_OPTIONS = {
  'pod-file': { type: 'string' },
  volume: { type: 'string' },
  items: { type: 'string' },
  'node-allocatable': { type: 'string' },
  'fs-group': { type: 'string' },
} as const satisfies ParseArgsConfig['options']

type Values = Record<string, string | boolean | undefined>

function parse(args: string[], options: ParseArgsConfig['options']): Values {
  try {
    const { values, positionals } = parseArgs({ args, options, strict: true, allowPositionals: true })
    if (positionals.length > 0) throw new UsageError('', `unexpected argument ${JSON.stringify(positionals[0])}`)
    return values as Values
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

async function render(args: string[]): Promise<void> {
  const flags = inputFlags(parse(args, INPUT_OPTIONS))
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
      case 'render':
        await render(args)
        return 0
      case 'help': case '--help': case '-h':
        process.stdout.write(USAGE + '\n')
        return 0
      case undefined:
        throw new UsageError('', 'a command is required (render, help)')
      default:
        throw new UsageError('', `unknown command ${JSON.stringify(command)} (commands: render, help)`)
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
