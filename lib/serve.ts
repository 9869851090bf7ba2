// `dapifs mount`: the life of a mount.
//   1. Check the mountpoint (missing, not a directory, busy: exit 2; stale: cleaned up).
//   2. Get the first pod and render it: from the file, or from the cluster (waiting for the API
//      server and the pod unless --no-wait). A pod that cannot be served: exit 2, nothing mounted.
//   3. Mount, say `ready:`, and follow the source: each change renders and maybe flips.
//   4. On SIGINT or SIGTERM (or the pod's deletion, with --exit-on-delete): unmount, exit 0.

import { readFile } from 'node:fs/promises'
import createDebug from 'debug'
import { oneLine } from './logline.js'
import { Daemon } from './fs/daemon.js'
import { readPodFile, readSettings, volumeOf, type InputFlags } from './volume/input.js'
import { nativeBuild, nativeLayer } from './fs/mount.js'
import { prepareMountpoint } from './fs/mountpoint.js'
import type { NodeView, Pod } from './volume/pod.js'
import { InputError } from './volume/shape.js'
import { FileSource } from './source/file.js'
import type { KubeSource } from './source/kube.js'

export interface ServeFlags extends InputFlags {
  uid?: number
  gid?: number
  debug?: boolean
  noWait?: boolean
  exitOnDelete?: boolean
  noInotify?: boolean
  /** Count FUSE requests by op; print the counts on SIGUSR2 (for the benchmark). */
  countRequests?: boolean
}

export const say = (line: string): void => { process.stderr.write(`dapifs: ${oneLine(line)}\n`) }

/** allow_other needs root, or user_allow_other in /etc/fuse.conf. */
async function canAllowOther(): Promise<boolean> {
  if (process.getuid?.() === 0) return true
  const conf = await readFile('/etc/fuse.conf', 'utf8').catch(() => '')
  return /^\s*user_allow_other\b/m.test(conf)
}

/** Prefixes an InputError from a pod with where the pod came from. */
function from(where: string, e: unknown): unknown {
  if (e instanceof InputError && !e.where.startsWith('--') && !e.message.startsWith(where)) return new InputError(where, e.message)
  return e
}

interface Source { stop(): void; describe: string }

/** Mounts and serves until stopped; resolves with the exit code. */
export async function serve(mountpoint: string, flags: ServeFlags, hint?: (mnt: string) => string): Promise<number> {
  if (flags.podFile !== undefined && flags.pod !== undefined) throw new InputError('--pod', 'cannot be combined with --pod-file: serve a file or a cluster pod, not both')
  if (flags.podFile === undefined && flags.pod === undefined) throw new InputError('', 'one of --pod-file FILE or --pod NAMESPACE/NAME is required: the pod to serve')
  // Every namespace but the per-request one, which is for when it is asked for by name.
  if (flags.debug) createDebug.enable('dapifs:*,-dapifs:requests')
  const settings = await readSettings(flags)
  const allowOther = await canAllowOther()
  let stop: (why: string) => void = () => {}
  const counts: Record<string, number> = {}
  if (flags.countRequests) process.on('SIGUSR2', () => say(`requests ${JSON.stringify(counts)}`))
  // A non-root daemon reports itself as the owner unless told otherwise: its own flips rename
  // ..data in the sticky root, which only the root's owner (or the entry's) may do.
  const uid = flags.uid ?? (process.getuid?.() === 0 ? undefined : process.getuid?.())
  const daemon = new Daemon({
    ...(flags.countRequests ? { onRequest: (op: string) => { counts[op] = (counts[op] ?? 0) + 1 } } : {}),
    mountpoint, settings, say, allowOther, ...(flags.noInotify ? { noInotify: true } : {}),
    ...(uid !== undefined ? { uid } : {}), ...(flags.gid !== undefined ? { gid: flags.gid } : {}),
  })
  if (await prepareMountpoint(mountpoint)) say(`${mountpoint}: unmounted a stale mount left by a daemon that died`)

  let source: Source
  let pod: Pod
  if (flags.podFile !== undefined) {
    const file = flags.podFile
    pod = await readPodFile(file)
    try { daemon.apply(pod) } catch (e) { throw from(file, e) }
    const fs = new FileSource(file, daemon)
    fs.start()
    source = { stop: () => fs.stop(), describe: `following ${file}` }
  } else {
    // Loaded only here: @kubernetes/client-node takes most of a second to load.
    const { KubeSource, loadKubeConfig, parsePodRef } = await import('./source/kube.js')
    const ref = parsePodRef(flags.pod!)
    const { kc, context } = loadKubeConfig(flags)
    let mounted = false
    let first: { pod: Pod; error?: unknown } | undefined
    const kube: KubeSource = new KubeSource(kc, context, ref.namespace, ref.name, {
      update: (p: Pod, node: Partial<NodeView> | undefined) => {
        if (mounted) return daemon.update(p, node)
        try { daemon.apply(p, node); first = { pod: p } } catch (e) { first = { pod: p, error: e } }
      },
      problem: (m) => daemon.problem(m),
      info: (m) => daemon.info(m),
      deleted: (m) => {
        daemon.deleted(m)
        if (flags.exitOnDelete) stop('the pod was deleted (--exit-on-delete)')
      },
    }, flags.noWait)
    say(`waiting for ${kube.who}`)
    await kube.start()
    if (first?.error) {
      kube.stop()
      throw from(kube.who, first.error)
    }
    pod = first!.pod
    mounted = true
    source = { stop: () => kube.stop(), describe: `following ${kube.who}` }
  }

  try {
    await daemon.start()
  } catch (e) {
    source.stop()
    throw new InputError(mountpoint, `cannot mount: ${(e as Error).message}`)
  }
  const gen = daemon.generation!
  const volume = settings.items ? '--items' : volumeOf(pod, settings).name
  if (!nativeLayer()) say(`fuse-native is its prebuilt libfuse 2 addon: flips happen inside the daemon, unseen by inotify, every read costs the daemon requests, and memory leaks under sustained concurrent reads; run \`node ${nativeBuild}\` (docs/cli.md, "Installing")`)
  say(`ready: serving volume ${JSON.stringify(volume)} of pod ${pod.namespace}/${pod.name} at ${mountpoint} ` +
    `(${gen.name}, ${gen.projection.files.length} files); ${source.describe}`)
  if (!allowOther) say('only this user can read the mount: allow_other needs root or user_allow_other in /etc/fuse.conf')
  if (hint) process.stderr.write(hint(mountpoint))

  return new Promise((resolve) => {
    let stopping = false
    stop = (why: string): void => {
      if (stopping) return
      stopping = true
      say(`${why}: unmounting ${mountpoint}`)
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
