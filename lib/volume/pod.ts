// The part of a Pod that a downward API volume reads, taken from untrusted JSON (a pod file,
// `kubectl get pod -o yaml`, or an object from the API server) with every field checked.
// Quantities stay raw here; they are parsed where they are used, so an error names the item.
// Quantities and times anywhere else in the pod are checked here as the API server's decoding
// checks them (decode.ts): a pod it would refuse never reaches a kubelet, so it must not render.

import type { Allocatable } from './resource.js'
import { decodeProblem } from './decode.js'
import { InputError, Shape, type Json } from './shape.js'

export interface FieldRef { fieldPath: string; apiVersion: string }
export interface ResourceFieldRef { containerName: string; resource: string; divisor: Json }

/** One item of a downward API volume: DownwardAPIVolumeFile. */
export interface VolumeItem {
  path: string
  fieldRef?: FieldRef
  resourceFieldRef?: ResourceFieldRef
  mode?: number
  /** An extension (extensions.ts): `json`; only read in dapifs's own item lists. */
  format?: string
}

/** A downwardAPI volume, or the downwardAPI sources of a projected volume, flattened. */
export interface DownwardVolume {
  name: string
  kind: 'downwardAPI' | 'projected'
  items: VolumeItem[]
  defaultMode?: number
  /**
   * Absent for a pod's own volume, which is exactly the kubelet's. dapifs's own item lists
   * (--items, a CSI volume's items) allow the extensions (extensions.ts), or refuse them by name
   * (`dapifs csi --no-extensions`).
   */
  extensions?: 'allowed' | 'refused'
}

export interface OwnerReference {
  apiVersion: string
  kind: string
  name: string
  uid: string
  controller?: boolean
  blockOwnerDeletion?: boolean
}

/**
 * What a volume reads from the pod's Node, passed beside the pod as one value: its allocatable
 * (what an unset cpu, memory or ephemeral-storage limit reads as) and its labels (the
 * node.metadata.labels extension). A source knows either, both or neither (Partial<NodeView>);
 * the daemon fills in what is unknown with its stand-ins (--node-allocatable or this machine's,
 * --node-labels) before rendering.
 */
export interface NodeView {
  allocatable: Allocatable
  labels: Map<string, string>
}

export interface Container {
  name: string
  limits: Map<string, Json>
  requests: Map<string, Json>
  where: string
  image?: string
}

export interface Pod {
  name: string
  namespace: string
  uid: string
  labels: Map<string, string>
  annotations: Map<string, string>
  /** spec.containers, then spec.initContainers: the order the kubelet searches them in. */
  containers: Container[]
  /** Every volume's name, and the downward API ones parsed. */
  volumeNames: string[]
  volumes: DownwardVolume[]
  fsGroup?: number
  /** spec.nodeName: set once the pod is scheduled. */
  nodeName?: string
  // Read for the extensions only (extensions.ts).
  serviceAccountName?: string
  hostIP?: string
  hostIPs?: string[]
  podIP?: string
  podIPs?: string[]
  ownerReferences?: OwnerReference[]
  /**
   * Why the API server would refuse this pod, in a field no item reads (a quantity that does
   * not parse, say). The projection fails with it once its items have rendered.
   */
  invalid?: InputError
}

function readItem(s: Shape, extensions: boolean): VolumeItem {
  const item: VolumeItem = { path: s.field('path').str() }
  if (extensions) {
    const format = s.field('format')
    if (format.present) item.format = format.str()
  }
  const fr = s.field('fieldRef')
  if (fr.present) {
    item.fieldRef = { fieldPath: fr.field('fieldPath').str(), apiVersion: fr.field('apiVersion').str('v1') || 'v1' }
  }
  const rr = s.field('resourceFieldRef')
  if (rr.present) {
    item.resourceFieldRef = {
      containerName: rr.field('containerName').str(),
      resource: rr.field('resource').str(),
      divisor: rr.field('divisor').value,
    }
  }
  const mode = s.field('mode').int()
  if (mode !== undefined) item.mode = mode
  return item
}

/**
 * A DownwardAPIVolumeSource: `{items: [...], defaultMode: 0644}`. `extensions` is for dapifs's
 * own item lists only; a pod's volumes are read without it.
 */
export function readDownwardAPISource(s: Shape, name: string, extensions?: 'allowed' | 'refused'): DownwardVolume {
  const v: DownwardVolume = {
    name, kind: 'downwardAPI',
    items: s.field('items').list().map((i) => readItem(i, extensions !== undefined)),
  }
  const mode = s.field('defaultMode').int()
  if (mode !== undefined) v.defaultMode = mode
  if (extensions !== undefined) v.extensions = extensions
  return v
}

function readVolume(s: Shape): DownwardVolume | undefined {
  const name = s.field('name').str()
  const dapi = s.field('downwardAPI')
  if (dapi.present) return readDownwardAPISource(dapi, name)
  const proj = s.field('projected')
  if (!proj.present) return undefined
  const items: VolumeItem[] = []
  let sawDownwardAPI = false
  for (const source of proj.field('sources').list()) {
    const d = source.field('downwardAPI')
    if (!d.present) continue
    sawDownwardAPI = true
    items.push(...d.field('items').list().map((i) => readItem(i, false)))
  }
  if (!sawDownwardAPI) return undefined
  const v: DownwardVolume = { name, kind: 'projected', items }
  const mode = proj.field('defaultMode').int()
  if (mode !== undefined) v.defaultMode = mode
  return v
}

function readContainer(s: Shape): Container {
  const res = s.field('resources')
  const quantities = (f: Shape): Map<string, Json> => new Map(Object.entries(f.obj()))
  return {
    name: s.field('name').str(),
    limits: quantities(res.field('limits')),
    requests: quantities(res.field('requests')),
    where: s.where,
    image: s.field('image').str(),
  }
}

const ips = (s: Shape): string[] => s.list().map((e) => e.field('ip').str()).filter((ip) => ip !== '')

function readOwner(s: Shape): OwnerReference {
  const o: OwnerReference = {
    apiVersion: s.field('apiVersion').str(), kind: s.field('kind').str(), name: s.field('name').str(), uid: s.field('uid').str(),
  }
  const controller = s.field('controller').bool()
  if (controller !== undefined) o.controller = controller
  const block = s.field('blockOwnerDeletion').bool()
  if (block !== undefined) o.blockOwnerDeletion = block
  return o
}

/** Reads a Pod; `where` prefixes field names in errors (empty for a whole file). */
export function readPod(raw: Json, where = ''): Pod {
  const s = new Shape(raw, where)
  s.obj()
  const kind = s.field('kind').str()
  if (kind && kind !== 'Pod') s.field('kind').fail(`must be Pod, not ${JSON.stringify(kind)}`)
  const apiVersion = s.field('apiVersion').str()
  if (apiVersion && apiVersion !== 'v1') s.field('apiVersion').fail(`must be v1 for a Pod, not ${JSON.stringify(apiVersion)}`)
  const meta = s.field('metadata')
  const spec = s.field('spec')
  const volumes = spec.field('volumes').list()
  const pod: Pod = {
    name: meta.field('name').str(),
    // A manifest without a namespace lands in "default", as kubectl would put it there.
    namespace: meta.field('namespace').str() || 'default',
    uid: meta.field('uid').str(),
    labels: meta.field('labels').strMap(),
    annotations: meta.field('annotations').strMap(),
    containers: [...spec.field('containers').list(), ...spec.field('initContainers').list()].map(readContainer),
    volumeNames: volumes.map((v) => v.field('name').str()),
    volumes: volumes.map(readVolume).filter((v): v is DownwardVolume => v !== undefined),
  }
  const fsGroup = spec.field('securityContext').field('fsGroup').int()
  if (fsGroup !== undefined) pod.fsGroup = fsGroup
  const nodeName = spec.field('nodeName').str()
  if (nodeName) pod.nodeName = nodeName
  // serviceAccount is the deprecated name; the API server copies it when serviceAccountName is unset.
  pod.serviceAccountName = spec.field('serviceAccountName').str() || spec.field('serviceAccount').str()
  const status = s.field('status')
  pod.hostIP = status.field('hostIP').str()
  pod.hostIPs = ips(status.field('hostIPs'))
  pod.podIP = status.field('podIP').str()
  pod.podIPs = ips(status.field('podIPs'))
  pod.ownerReferences = meta.field('ownerReferences').list().map(readOwner)
  const invalid = decodeProblem(s)
  if (invalid) pod.invalid = invalid
  return pod
}

/**
 * Picks the volume to serve: the one named, or else the pod's only downward API volume.
 * Each failure says which volumes there are.
 */
export function pickVolume(pod: Pod, name?: string): DownwardVolume {
  const names = pod.volumes.map((v) => JSON.stringify(v.name)).join(', ')
  if (name !== undefined) {
    const v = pod.volumes.find((v) => v.name === name)
    if (v) return v
    const why = pod.volumeNames.includes(name)
      ? 'is not a downwardAPI volume or a projected volume with downwardAPI sources'
      : 'is not a volume of this pod'
    throw new InputError('--volume', `${JSON.stringify(name)} ${why}` +
      (names ? ` (downward API volumes: ${names})` : ' (it has no downward API volumes)'))
  }
  if (pod.volumes.length === 1) return pod.volumes[0]!
  if (pod.volumes.length === 0) {
    throw new InputError('spec.volumes', 'the pod has no downwardAPI volume and no projected volume with downwardAPI sources; give --items FILE')
  }
  throw new InputError('spec.volumes', `the pod has several downward API volumes (${names}); pick one with --volume NAME`)
}
