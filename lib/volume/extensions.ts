// Extensions: fields and a format that the kubelet's downward API volume does not serve, for
// dapifs's own item lists only (--items, a CSI volume's items). A pod's own downwardAPI or
// projected volume never reaches this module: it stays exactly the kubelet's (fieldpath.ts).
//
//   spec.nodeName, spec.serviceAccountName     the string ('' until set)
//   status.hostIP, status.podIP                the address ('' until the pod has one)
//   status.hostIPs, status.podIPs              one address a line, no final newline
//   metadata.ownerReferences                   one owner a line (ownerLine)
//   node.metadata.labels                       the Node's labels, as FormatMap writes labels
//   node.metadata.labels['KEY']                one of them ('' when absent)
//   spec.containers['NAME'].image              that container's image (and initContainers)
//   format: json                               on metadata.labels, metadata.annotations,
//                                              node.metadata.labels, metadata.ownerReferences:
//                                              one JSON value, keys sorted, no final newline

import { FieldPathError, VOLUME_FIELD_PATHS, byteCompare, checkFieldRef, extractFieldPath, formatMap, qualifiedNameErrors, splitSubscript } from './fieldpath.js'
import type { FieldRef, NodeView, OwnerReference, Pod, VolumeItem } from './pod.js'
import { goQuote } from './quote.js'
import type { KubeletRelease } from './release.js'

const PLAIN = [
  'spec.nodeName', 'spec.serviceAccountName', 'status.hostIP', 'status.hostIPs', 'status.podIP', 'status.podIPs',
  'metadata.ownerReferences', 'node.metadata.labels',
]
export const EXTENSION_FIELD_PATHS = [...PLAIN, "node.metadata.labels['<KEY>']", "spec.containers['<NAME>'].image", "spec.initContainers['<NAME>'].image"]
export const FORMATS = ['json']
export const FORMATTED_PATHS = ['metadata.labels', 'metadata.annotations', 'node.metadata.labels', 'metadata.ownerReferences']

const IMAGE_RE = /^spec\.(containers|initContainers)\['(.*)'\]\.image$/s
const NODE_LABELS = 'node.metadata.labels'
const DNS1123_LABEL_RE = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/

export function isExtensionPath(fp: string): boolean {
  return PLAIN.includes(fp) || IMAGE_RE.test(fp) || splitSubscript(fp)?.[0] === NODE_LABELS
}

/** What makes an item an extension, for a refusal; undefined for a kubelet item. */
export function extensionOf(item: VolumeItem): string | undefined {
  if (item.fieldRef && isExtensionPath(item.fieldRef.fieldPath)) return `fieldPath ${item.fieldRef.fieldPath}`
  if (item.format !== undefined) return `format: ${item.format}`
  return undefined
}

/** The items that read the pod's Node (its labels). */
export function readsNode(item: VolumeItem): boolean {
  const fp = item.fieldRef?.fieldPath
  return fp !== undefined && (fp === NODE_LABELS || splitSubscript(fp)?.[0] === NODE_LABELS)
}

/**
 * What of its Node a pod may read through node.metadata.labels on a shared node agent, by default:
 * the topology labels that Kubernetes itself copies onto pods since 1.33 (KEP-4742, the
 * PodTopologyLabels admission plugin). Other node labels can say what the cluster's operator
 * does not want every pod to know (kubernetes/kubernetes#40610); the operator names more keys,
 * all of them ('*'), or none.
 */
export const DEFAULT_NODE_LABEL_KEYS = ['topology.kubernetes.io/zone', 'topology.kubernetes.io/region']

/** The node label keys pods may read: a set, or every one. */
export type NodeLabelKeys = ReadonlySet<string> | 'all'

/** The key of a node.metadata.labels['KEY'] item, if it is one. */
export function nodeLabelKeyOf(item: VolumeItem): string | undefined {
  const sub = item.fieldRef ? splitSubscript(item.fieldRef.fieldPath) : undefined
  return sub?.[0] === NODE_LABELS ? sub[1] : undefined
}

/** The Node as a pod may see it: only the labels whose keys are allowed. */
export function nodeViewFor(node: Partial<NodeView>, keys: NodeLabelKeys): Partial<NodeView> {
  if (keys === 'all' || !node.labels) return node
  return { ...node, labels: new Map([...node.labels].filter(([k]) => keys.has(k))) }
}

/** Checks an item of a list that allows extensions; throws FieldPathError with one line. */
export function checkExtensionItem(item: VolumeItem): void {
  if (item.format !== undefined) {
    if (!FORMATS.includes(item.format)) throw new FieldPathError(`format: ${JSON.stringify(item.format)} is not a format (allowed: ${FORMATS.join(', ')})`)
    if (!item.fieldRef || !FORMATTED_PATHS.includes(item.fieldRef.fieldPath)) {
      const what = item.fieldRef ? item.fieldRef.fieldPath : 'a resourceFieldRef'
      throw new FieldPathError(`format: ${item.format} is not available for ${what} (only for ${FORMATTED_PATHS.join(', ')})`)
    }
  }
  if (item.fieldRef) checkExtensionRef(item.fieldRef)
}

function checkExtensionRef(ref: FieldRef): void {
  const fp = ref.fieldPath
  if (fp === '' || ref.apiVersion !== 'v1' || !isExtensionPath(fp)) {
    try {
      checkFieldRef(ref)
    } catch (e) {
      const m = (e as Error).message
      if (!m.startsWith('unsupported fieldPath:')) throw e
      throw new FieldPathError(`unsupported fieldPath: ${fp} (dapifs items allow ${VOLUME_FIELD_PATHS.join(', ')}, and the extensions ${EXTENSION_FIELD_PATHS.join(', ')})`)
    }
    return
  }
  const image = IMAGE_RE.exec(fp)
  if (image) {
    const name = image[2]!
    if (!DNS1123_LABEL_RE.test(name) || name.length > 63) {
      throw new FieldPathError(`invalid container name in ${fp}: a container name is a lowercase RFC 1123 label (at most 63 of a-z, 0-9 and '-', starting and ending with a letter or digit)`)
    }
  }
  const sub = splitSubscript(fp)
  if (sub?.[0] === NODE_LABELS) {
    const errs = qualifiedNameErrors(sub[1])
    if (errs.length > 0) throw new FieldPathError(`invalid key subscript in ${fp}: ${errs.join(';')}`)
  }
}

/** A map as one JSON object: keys in byte order, compact, no final newline. */
export function jsonMap(m: Map<string, string>): string {
  return `{${[...m.keys()].sort(byteCompare).map((k) => `${JSON.stringify(k)}:${JSON.stringify(m.get(k))}`).join(',')}}`
}

/** An owner's fields in key order: strings as strings, the two flags only when set. */
function ownerFields(o: OwnerReference): [string, string | boolean][] {
  const f: [string, string | boolean][] = [['apiVersion', o.apiVersion]]
  if (o.blockOwnerDeletion !== undefined) f.push(['blockOwnerDeletion', o.blockOwnerDeletion])
  if (o.controller !== undefined) f.push(['controller', o.controller])
  f.push(['kind', o.kind], ['name', o.name], ['uid', o.uid])
  return f
}

/** `apiVersion="apps/v1" controller=true kind="ReplicaSet" name="web-5d8f7" uid="…"`: values quoted as in the labels file. */
export function ownerLine(o: OwnerReference): string {
  return ownerFields(o).map(([k, v]) => `${k}=${typeof v === 'boolean' ? String(v) : goQuote(v)}`).join(' ')
}

export function ownersJson(owners: OwnerReference[]): string {
  return `[${owners.map((o) => `{${ownerFields(o).map(([k, v]) => `${JSON.stringify(k)}:${JSON.stringify(v)}`).join(',')}}`).join(',')}]`
}

/** A list of addresses, one a line; the single address when the server has no list (older API servers). */
function addresses(list: string[] | undefined, one: string | undefined): string {
  return (list && list.length > 0 ? list : one ? [one] : []).join('\n')
}

/**
 * The file's text for a fieldRef item of a list that allows extensions (checked already). The
 * kubelet's own fields are rendered as `release`'s kubelet; the extensions, which no kubelet has,
 * quote as the newest's Go.
 */
export function extractExtension(pod: Pod, node: NodeView, item: VolumeItem & { fieldRef: FieldRef }, release?: KubeletRelease): string {
  const fp = item.fieldRef.fieldPath
  const nodeLabels = node.labels
  if (item.format === 'json') {
    switch (fp) {
      case 'metadata.labels': return jsonMap(pod.labels)
      case 'metadata.annotations': return jsonMap(pod.annotations)
      case NODE_LABELS: return jsonMap(nodeLabels)
      case 'metadata.ownerReferences': return ownersJson(pod.ownerReferences ?? [])
    }
  }
  switch (fp) {
    case 'spec.nodeName': return pod.nodeName ?? ''
    case 'spec.serviceAccountName': return pod.serviceAccountName ?? ''
    case 'status.hostIP': return pod.hostIP ?? ''
    case 'status.hostIPs': return addresses(pod.hostIPs, pod.hostIP)
    case 'status.podIP': return pod.podIP ?? ''
    case 'status.podIPs': return addresses(pod.podIPs, pod.podIP)
    case 'metadata.ownerReferences': return (pod.ownerReferences ?? []).map(ownerLine).join('\n')
    case NODE_LABELS: return formatMap(nodeLabels)
  }
  const image = IMAGE_RE.exec(fp)
  if (image) {
    const [, list, name] = image
    const c = pod.containers.find((c) => c.name === name && c.where.startsWith(`spec.${list}[`))
    if (!c) throw new FieldPathError(`container ${name} not found in spec.${list}`)
    return c.image ?? ''
  }
  const sub = splitSubscript(fp)
  if (sub?.[0] === NODE_LABELS) return nodeLabels.get(sub[1]) ?? ''
  return extractFieldPath(pod, fp, release)
}
