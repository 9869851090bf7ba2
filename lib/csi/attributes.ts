// What a CSI ephemeral volume asks for, from NodePublishVolume's volume_context: the pod's
// volumeAttributes (`items`, `defaultMode`) and what the kubelet adds with podInfoOnMount
// (csi.storage.k8s.io/pod.name, pod.namespace, pod.uid, serviceAccount.name, ephemeral).
//
// The items are checked exactly as a downwardAPI volume's are (projection.ts checkVolume), with
// the same one-line messages as `dapifs render --items`; where a field is wrong the message
// names it from `volumeAttributes`, as the pod's author wrote it. They may use the extensions
// (extensions.ts), unless the driver refuses them (`dapifs csi --no-extensions`).
//
// The attributes are the pod author's, and the node agent is shared: the `items` text is
// measured before it is parsed (checkVolumeContext), YAML anchors are refused (budget.ts), and
// the driver parses it off its thread (parser.ts).

import { DEFAULT_VOLUME_BUDGET, overBudget, type VolumeBudget } from '../volume/budget.js'
import { parseManifest } from '../volume/manifest.js'
import type { DownwardVolume } from '../volume/pod.js'
import { readDownwardAPISource } from '../volume/pod.js'
import { checkVolume } from '../volume/projection.js'
import { InputError, Shape } from '../volume/shape.js'

const POD_INFO = 'csi.storage.k8s.io/'
const ATTRIBUTES = ['items', 'defaultMode']

export interface PodRef { namespace: string; name: string; uid: string }

export interface VolumeRequest {
  pod: PodRef
  volume: DownwardVolume
  /** The same for the same request: what makes a second publish a no-op. */
  key: string
}

/** The pod's volume name, from a kubelet target path (…/volumes/kubernetes.io~csi/NAME/mount). */
export function volumeNameOf(targetPath: string, fallback: string): string {
  const m = /\/volumes\/kubernetes\.io~csi\/([^/]+)\/mount\/?$/.exec(targetPath)
  return m ? m[1]! : fallback
}

/** One YAML or JSON value of an attribute's text, anchors refused. */
export function parseAttribute(text: string, where: string): unknown {
  const docs = parseManifest(text, where, { anchors: 'refused' })
  if (docs.length !== 1) throw new InputError(where, `must hold one YAML or JSON value, not ${docs.length}`)
  return docs[0]
}

export const ITEMS_WHERE = 'volumeAttributes.items'

/**
 * What is checked before anything is parsed: the attributes' names, the pod's identity, and the
 * size of the items' text (budget.ts). Returns the pod and the text to parse.
 */
export function checkVolumeContext(ctx: Record<string, string>, budget: VolumeBudget = DEFAULT_VOLUME_BUDGET): { pod: PodRef; items: string } {
  for (const key of Object.keys(ctx)) {
    if (!key.startsWith(POD_INFO) && !ATTRIBUTES.includes(key)) {
      throw new InputError('volumeAttributes', `unknown attribute ${JSON.stringify(key)} (allowed: ${ATTRIBUTES.join(', ')})`)
    }
  }
  const info = (k: string): string => {
    const v = ctx[POD_INFO + k]
    if (!v) throw new InputError('volume_context', `has no ${POD_INFO}${k}: the CSIDriver object must set podInfoOnMount: true`)
    return v
  }
  if (ctx[POD_INFO + 'ephemeral'] === 'false') {
    throw new InputError('volume_context', 'is for a persistent volume: dapifs serves only CSI ephemeral inline volumes (volumeLifecycleModes: [Ephemeral])')
  }
  const pod = { namespace: info('pod.namespace'), name: info('pod.name'), uid: info('pod.uid') }
  if (ctx.items === undefined) {
    throw new InputError(ITEMS_WHERE, 'is required: the downwardAPI items list, as YAML or JSON (- path: labels\\n  fieldRef: {fieldPath: metadata.labels})')
  }
  const textBytes = Buffer.byteLength(ctx.items, 'utf8')
  if (textBytes > budget.itemsText) throw overBudget(ITEMS_WHERE, 'is', textBytes, budget.itemsText, 'items-text', 'bytes')
  return { pod, items: ctx.items }
}

/** The request, from a checked context (checkVolumeContext) and its items, parsed (parseAttribute). */
export function volumeRequest(ctx: Record<string, string>, items: unknown, volumeName: string, extensions: 'allowed' | 'refused' = 'allowed',
  budget: VolumeBudget = DEFAULT_VOLUME_BUDGET): VolumeRequest {
  return requestOf(checkVolumeContext(ctx, budget).pod, ctx, items, volumeName, extensions, budget)
}

/** volumeRequest, for a volume context checked already (checkVolumeContext) that gave `pod`. */
function requestOf(pod: PodRef, ctx: Record<string, string>, items: unknown, volumeName: string, extensions: 'allowed' | 'refused',
  budget: VolumeBudget): VolumeRequest {
  const source: Record<string, unknown> = { items }
  if (!Array.isArray(source.items)) new Shape(source.items, ITEMS_WHERE).list()
  if (ctx.defaultMode !== undefined) source.defaultMode = parseAttribute(ctx.defaultMode, 'volumeAttributes.defaultMode')
  const volume = readDownwardAPISource(new Shape(source, 'volumeAttributes'), volumeName, extensions)
  checkVolume(volume, budget)
  return { pod, volume, key: requestKey(pod, ctx) }
}

/** What tells one request from another: the pod, the items' text, the mode. */
function requestKey(pod: PodRef, ctx: Record<string, string>): string {
  return JSON.stringify([pod, ctx.items, ctx.defaultMode ?? null])
}

/**
 * Volumes read before by readVolumeContext, by what they were read from (the items' text, the
 * mode, the name, extensions allowed or not), for each budget. A restart reads a thousand records,
 * most of them from the same few manifests: each text is parsed and checked once. A volume is
 * never changed once read, so one serves every request that reads the same.
 */
const readBefore = new WeakMap<VolumeBudget, Map<string, DownwardVolume>>()
const READ_BEFORE = 256

/** checkVolumeContext, parseAttribute and volumeRequest, in this thread. */
export function readVolumeContext(ctx: Record<string, string>, volumeName: string, extensions: 'allowed' | 'refused' = 'allowed',
  budget: VolumeBudget = DEFAULT_VOLUME_BUDGET): VolumeRequest {
  const { pod, items } = checkVolumeContext(ctx, budget)
  let seen = readBefore.get(budget)
  if (!seen) readBefore.set(budget, (seen = new Map()))
  const from = JSON.stringify([items, ctx.defaultMode ?? null, volumeName, extensions])
  const volume = seen.get(from)
  if (volume) return { pod, volume, key: requestKey(pod, ctx) }
  const request = requestOf(pod, ctx, parseAttribute(items, ITEMS_WHERE), volumeName, extensions, budget)
  if (seen.size >= READ_BEFORE) seen.clear()
  seen.set(from, request.volume)
  return request
}
