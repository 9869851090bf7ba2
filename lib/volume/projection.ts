// The projection: a pod and one of its downward API volumes in, the files the kubelet would
// write out (path, bytes, mode). This is the kubelet's CollectData followed by the atomic
// writer's payload checks and SetVolumeOwnership's mode change, with no I/O:
//   - each item's path is cleaned (filepath.Clean) and checked; its mode is item.mode, or else
//     the volume's defaultMode (0644 when unset); both must be within 0..0777;
//   - fieldRef items give ExtractFieldPathAsString's text, resourceFieldRef items the
//     container's resource value (resource.ts);
//   - with an fsGroup, every file's mode gains 0440 and its group is the fsGroup;
//   - any bad item fails the whole volume, as the kubelet then writes nothing. In a
//     downwardAPI volume a later item with the same cleaned path replaces an earlier one (a Go
//     map); a projected volume refuses duplicates, as the API server does;
//   - a pod that the API server would refuse (pod.invalid: a quantity no item reads that does
//     not parse, say) fails too, once its items have rendered: no kubelet ever sees such a pod.
// dapifs's own item lists (volume.extensions) may also use the extensions (extensions.ts), or,
// when they are refused, name them in the error; a pod's own volume is the kubelet's alone.
//
// Budgets (budget.ts): a volume with too many items is refused before any is read, and one whose
// files are too large before their bytes are built. Each distinct item (the same field, format,
// or resource and divisor) is rendered once, however often the list repeats it, and the files it
// gives share their bytes: a thousand copies of `metadata.annotations` cost one.

import { DEFAULT_VOLUME_BUDGET, overBudget, type VolumeBudget } from './budget.js'
import { checkFieldRef, extractFieldPath } from './fieldpath.js'
import { checkExtensionItem, extensionOf, extractExtension } from './extensions.js'
import { cleanPath, pathProblem } from './itempath.js'
import type { DownwardVolume, NodeView, Pod, VolumeItem } from './pod.js'
import { checkResourceFieldRef, resourceValue } from './resource.js'
import { NEWEST, type KubeletRelease } from './release.js'
import { InputError } from './shape.js'

export const DEFAULT_MODE = 0o644
export const MODE_PROBLEM = 'must be a number between 0 and 0777 (octal), both inclusive'

export interface ProjectedFile {
  /** The cleaned path, relative to the volume. */
  path: string
  data: Buffer
  /** Permission bits only (0..0777). */
  mode: number
}

export interface Projection {
  /** Sorted by path. */
  files: ProjectedFile[]
  /** The files' group: the fsGroup, when there is one. */
  gid?: number
}

export interface ProjectOptions {
  /** The pod's Node: its allocatable, for unset limits, and its labels, for the extension. */
  node: NodeView
  /** Overrides the pod's spec.securityContext.fsGroup. */
  fsGroup?: number
  /** DEFAULT_VOLUME_BUDGET when absent. */
  budget?: VolumeBudget
  /** The kubelet to render as (release.ts); the newest supported when absent. */
  release?: KubeletRelease
}

const modeOk = (m: number): boolean => Number.isInteger(m) && m >= 0 && m <= 0o777

/** Names an item in errors by its path, as users know it. */
function itemError(volume: DownwardVolume, item: VolumeItem, problem: string): InputError {
  return new InputError(`volume ${JSON.stringify(volume.name)}, item ${JSON.stringify(item.path)}`, problem)
}

/**
 * Checks what does not depend on the pod's data: paths, modes, field paths, resources and
 * divisors. A volume that passes can still fail on a pod (a container that is not there).
 */
export function checkVolume(volume: DownwardVolume, budget: VolumeBudget = DEFAULT_VOLUME_BUDGET, release: KubeletRelease = NEWEST): void {
  if (volume.items.length > budget.items) {
    throw overBudget(`volume ${JSON.stringify(volume.name)}`, 'has', volume.items.length, budget.items, 'items', 'items')
  }
  if (volume.defaultMode !== undefined && !modeOk(volume.defaultMode)) {
    throw new InputError(`volume ${JSON.stringify(volume.name)}, defaultMode`, `${volume.defaultMode}: ${MODE_PROBLEM}`)
  }
  const seen = new Map<string, VolumeItem>()
  for (const item of volume.items) {
    const fail = (problem: string): never => { throw itemError(volume, item, problem) }
    const pp = pathProblem(item.path)
    if (pp) fail(`path ${pp}`)
    if (item.mode !== undefined && !modeOk(item.mode)) fail(`mode ${item.mode}: ${MODE_PROBLEM}`)
    if (item.fieldRef && item.resourceFieldRef) fail('fieldRef and resourceFieldRef can not be specified simultaneously')
    if (!item.fieldRef && !item.resourceFieldRef) fail('one of fieldRef and resourceFieldRef is required')
    const extension = volume.extensions === 'refused' ? extensionOf(item) : undefined
    if (extension) fail(`${extension} is a dapifs extension, which this driver refuses (dapifs csi --no-extensions)`)
    try {
      if (volume.extensions === 'allowed') checkExtensionItem(item)
      else if (item.fieldRef) checkFieldRef(item.fieldRef)
      if (item.resourceFieldRef) checkResourceFieldRef(item.resourceFieldRef, release)
    } catch (e) {
      fail((e as Error).message)
    }
    const path = cleanPath(item.path)
    if (seen.has(path) && volume.kind === 'projected') fail('conflicting duplicate paths')
    seen.set(path, item)
  }
  // A file cannot also be a directory: the kubelet's write of one of them would fail.
  const paths = new Set(seen.keys())
  for (const [path, item] of seen) {
    const parts = path.split('/')
    for (let i = 1; i < parts.length; i++) {
      const parent = parts.slice(0, i).join('/')
      if (paths.has(parent)) {
        throw itemError(volume, item, `path conflicts with item ${JSON.stringify(seen.get(parent)!.path)}, which is a file`)
      }
    }
  }
}

/** What makes two items render the same text (the path and mode aside). */
function renderKey(item: VolumeItem): string {
  if (item.fieldRef) return JSON.stringify(['f', item.fieldRef.fieldPath, item.fieldRef.apiVersion, item.format ?? null])
  const r = item.resourceFieldRef!
  return JSON.stringify(['r', r.containerName, r.resource, r.divisor ?? null])
}

export function project(pod: Pod, volume: DownwardVolume, opts: ProjectOptions): Projection {
  const budget = opts.budget ?? DEFAULT_VOLUME_BUDGET
  const release = opts.release ?? NEWEST
  checkVolume(volume, budget, release)
  const defaultMode = volume.defaultMode ?? DEFAULT_MODE
  const fsGroup = opts.fsGroup ?? pod.fsGroup
  const rendered = new Map<string, { text: string; size: number; data?: Buffer } | Error>()
  const byPath = new Map<string, { path: string; text: { text: string; size: number; data?: Buffer }; mode: number }>()
  for (const item of volume.items) {
    const key = renderKey(item)
    let r = rendered.get(key)
    if (r === undefined) {
      try {
        const text = !item.fieldRef ? resourceValue(item.resourceFieldRef!, pod, opts.node.allocatable, release)
          : volume.extensions === 'allowed' ? extractExtension(pod, opts.node, { ...item, fieldRef: item.fieldRef }, release)
            : extractFieldPath(pod, item.fieldRef.fieldPath, release)
        r = { text, size: Buffer.byteLength(text, 'utf8') }
      } catch (e) {
        r = e as Error
      }
      rendered.set(key, r)
    }
    if (r instanceof InputError) throw r
    if (r instanceof Error) throw itemError(volume, item, r.message)
    if (r.size > budget.file) {
      throw overBudget(`volume ${JSON.stringify(volume.name)}, item ${JSON.stringify(item.path)}`, 'renders', r.size, budget.file, 'file', 'bytes')
    }
    let mode = item.mode ?? defaultMode
    if (fsGroup !== undefined) mode |= 0o440
    const path = cleanPath(item.path)
    byPath.set(path, { path, text: r, mode })
  }
  let total = 0
  for (const f of byPath.values()) total += f.text.size
  if (total > budget.volume) throw overBudget(`volume ${JSON.stringify(volume.name)}`, 'renders', total, budget.volume, 'volume', 'bytes')
  if (pod.invalid) throw pod.invalid
  const files = [...byPath.values()]
    .map((f) => ({ key: Buffer.from(f.path), file: { path: f.path, data: (f.text.data ??= Buffer.from(f.text.text, 'utf8')), mode: f.mode } }))
    .sort((a, b) => Buffer.compare(a.key, b.key))
    .map((f) => f.file)
  return fsGroup !== undefined ? { files, gid: fsGroup } : { files }
}
