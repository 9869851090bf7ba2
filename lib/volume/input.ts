// What `render` and `mount` read from their flags: the pod, the volume to serve, the node's
// allocatable resources and the fsGroup. Every failure is an InputError naming the file, field
// or flag.

import { readFile } from 'node:fs/promises'
import { DEFAULT_VOLUME_BUDGET, VOLUME_BUDGET_KEYS, parseBudgetFlag, type VolumeBudget } from './budget.js'
import { machineAllocatable, parseAllocatableFlag, parseNodeLabelsFlag } from './allocatable.js'
import { readsNode } from './extensions.js'
import { parseSingle } from './manifest.js'
import { pickVolume, readDownwardAPISource, readPod, type DownwardVolume, type NodeView, type Pod } from './pod.js'
import { checkVolume, project, type Projection } from './projection.js'
import type { Allocatable } from './resource.js'
import { InputError, Shape, isObj } from './shape.js'
import { parseRelease, type KubeletRelease } from './release.js'

export interface InputFlags {
  podFile?: string
  pod?: string
  kubeconfig?: string
  context?: string
  volume?: string
  items?: string
  nodeAllocatable?: string
  nodeLabels?: string
  fsGroup?: string
  budget?: string
  kubeletVersion?: string
}

/** Everything but the pod: fixed for the life of a mount. */
export interface Settings {
  items?: DownwardVolume
  volumeName?: string
  allocatable: Allocatable
  fsGroup?: number
  /**
   * What stands in for the Node where its source does not know it (NodeView): `allocatable` above
   * (--node-allocatable, or this machine's), and these labels (--node-labels, for a pod file).
   */
  nodeLabels?: Map<string, string>
  /** What a volume may ask for (--budget); DEFAULT_VOLUME_BUDGET when absent. */
  budget?: VolumeBudget
  /** The kubelet to render as (--kubelet-version); the newest supported when absent. */
  release?: KubeletRelease
}

/**
 * The files of the pod's volume as `settings` say, with what is known of its Node; the settings
 * stand in for what is not (--node-allocatable or this machine's, --node-labels).
 */
export function renderVolume(pod: Pod, settings: Settings, node?: Partial<NodeView>): Projection {
  return project(pod, volumeOf(pod, settings), {
    node: { allocatable: node?.allocatable ?? settings.allocatable, labels: node?.labels ?? settings.nodeLabels ?? new Map<string, string>() },
    ...(settings.fsGroup !== undefined ? { fsGroup: settings.fsGroup } : {}),
    ...(settings.budget ? { budget: settings.budget } : {}),
    ...(settings.release ? { release: settings.release } : {}),
  })
}

export async function readText(file: string, flag: string): Promise<string> {
  try {
    return await readFile(file, 'utf8')
  } catch (e) {
    const err = e as NodeJS.ErrnoException
    const why = err.code === 'ENOENT' ? 'no such file' : err.code === 'EISDIR' ? 'is a directory' : err.message
    throw new InputError(flag, `cannot read ${file}: ${why}`)
  }
}

function prefixed<T>(file: string, fn: () => T): T {
  try {
    return fn()
  } catch (e) {
    if (e instanceof InputError && !e.message.startsWith(file)) throw new InputError(file, e.message)
    throw e
  }
}

export function parsePodText(text: string, file: string): Pod {
  return prefixed(file, () => readPod(parseSingle(text, file, 'a Pod', (d) => isObj(d) && d.kind === 'Pod')))
}

export async function readPodFile(file: string): Promise<Pod> {
  return parsePodText(await readText(file, '--pod-file'), file)
}

export async function readItemsFile(file: string, budget: VolumeBudget = DEFAULT_VOLUME_BUDGET, release?: KubeletRelease): Promise<DownwardVolume> {
  const text = await readText(file, '--items')
  return prefixed(file, () => {
    const raw = parseSingle(text, file, 'a DownwardAPIVolumeSource', (d) => isObj(d) && 'items' in d)
    const s = new Shape(raw, '')
    s.obj()
    if (!s.field('items').present) s.field('items').fail('is required: a DownwardAPIVolumeSource is {items: [...], defaultMode: ...}')
    const v = readDownwardAPISource(s, '--items', 'allowed')
    checkVolume(v, budget, release)
    return v
  })
}

export function parseId(text: string, flag: string): number {
  const n = /^[0-9]+$/.test(text) ? Number(text) : NaN
  if (!Number.isSafeInteger(n) || n > 0xfffffffe) throw new InputError(flag, `${JSON.stringify(text)} is not a numeric id from 0 to 4294967294`)
  return n
}

export async function readSettings(flags: InputFlags): Promise<Settings> {
  if (flags.items !== undefined && flags.volume !== undefined) {
    throw new InputError('--items', 'cannot be combined with --volume: --items replaces the pod\'s volumes')
  }
  const settings: Settings = {
    allocatable: flags.nodeAllocatable !== undefined ? parseAllocatableFlag(flags.nodeAllocatable) : machineAllocatable(),
  }
  if (flags.budget !== undefined) settings.budget = parseBudgetFlag(flags.budget, VOLUME_BUDGET_KEYS, DEFAULT_VOLUME_BUDGET)
  if (flags.kubeletVersion !== undefined) settings.release = parseRelease(flags.kubeletVersion, '--kubelet-version')
  if (flags.items !== undefined) settings.items = await readItemsFile(flags.items, settings.budget, settings.release)
  if (flags.volume !== undefined) settings.volumeName = flags.volume
  if (flags.fsGroup !== undefined) settings.fsGroup = parseId(flags.fsGroup, '--fs-group')
  if (flags.nodeLabels !== undefined) {
    if (flags.pod !== undefined) throw new InputError('--node-labels', 'cannot be combined with --pod: the labels are those of the pod\'s Node in the cluster')
    settings.nodeLabels = parseNodeLabelsFlag(flags.nodeLabels)
  }
  // A pod file has no Node: node.metadata.labels needs --node-labels, rather than reading empty for ever.
  const nodeItem = flags.pod === undefined && settings.nodeLabels === undefined ? settings.items?.items.find(readsNode) : undefined
  if (nodeItem) {
    throw new InputError(flags.items!, `item ${JSON.stringify(nodeItem.path)}: ${nodeItem.fieldRef!.fieldPath} reads the pod's Node, and a pod file has none: ` +
      'give its labels with --node-labels KEY=VALUE,... or follow the pod in its cluster with --pod NAMESPACE/NAME')
  }
  return settings
}

/** The volume the settings pick out of this pod. */
export function volumeOf(pod: Pod, settings: Settings): DownwardVolume {
  return settings.items ?? pickVolume(pod, settings.volumeName)
}
