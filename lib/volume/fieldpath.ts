// fieldRef items: what the kubelet's fieldpath.ExtractFieldPathAsString writes for a volume,
// with the API server's checks in front of it (apiVersion, the volume's allowed paths).

import { goQuote } from './quote.js'
import { NEWEST, type KubeletRelease } from './release.js'
import type { FieldRef, Pod } from './pod.js'

/** Paths a downward API *volume* accepts; the env-var set (spec.nodeName, status.podIP…) is larger. */
export const VOLUME_FIELD_PATHS = [
  'metadata.name', 'metadata.namespace', 'metadata.uid', 'metadata.labels', 'metadata.annotations',
  "metadata.labels['<KEY>']", "metadata.annotations['<KEY>']",
]

export class FieldPathError extends Error {}

/**
 * fieldpath.SplitMaybeSubscriptedPath: `metadata.labels['a']` → ['metadata.labels', 'a'].
 * The key runs from the first `['` to a final `']`, so it may itself contain quotes and brackets.
 */
export function splitSubscript(fp: string): [string, string] | undefined {
  if (!fp.endsWith("']")) return undefined
  const s = fp.slice(0, -2)
  const i = s.indexOf("['")
  if (i <= 0) return undefined
  return [s.slice(0, i), s.slice(i + 2)]
}

const NAME_RE = /^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$/
const DNS1123_SUBDOMAIN_RE = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/
const NAME_MSG = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an " +
  "alphanumeric character (e.g. 'MyName', or 'my.name', or '123-abc', regex used for validation is " +
  "'([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"

/** apimachinery's validation.IsQualifiedName: `[prefix/]name`, its messages. */
export function qualifiedNameErrors(value: string): string[] {
  const parts = value.split('/')
  const errs: string[] = []
  let name: string
  if (parts.length === 1) {
    name = parts[0]!
  } else if (parts.length === 2) {
    const prefix = parts[0]!
    name = parts[1]!
    if (prefix.length === 0) errs.push('prefix part must be non-empty')
    else if (prefix.length > 253) errs.push('prefix part must be no more than 253 characters')
    else if (!DNS1123_SUBDOMAIN_RE.test(prefix)) {
      errs.push("prefix part a lowercase RFC 1123 subdomain must consist of lower case alphanumeric " +
        "characters, '-' or '.', and must start and end with an alphanumeric character (e.g. " +
        "'example.com', regex used for validation is " +
        "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")
    }
  } else {
    return [`a qualified name ${NAME_MSG} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')`]
  }
  if (name.length === 0) errs.push('name part must be non-empty')
  else if (name.length > 63) errs.push('name part must be no more than 63 characters')
  if (!NAME_RE.test(name)) errs.push(`name part ${NAME_MSG}`)
  return errs
}

/** Byte order of UTF-8, which is Go's string order (JS's < compares UTF-16 units). */
export function byteCompare(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'))
}

/** fieldpath.FormatMap: `key="quoted value"` lines, keys byte-sorted, no final newline; %q as `release`'s Go. */
export function formatMap(m: Map<string, string>, release: KubeletRelease = NEWEST): string {
  return [...m.keys()].sort(byteCompare).map((k) => `${k}=${goQuote(m.get(k)!, release.printable)}`).join('\n')
}

/** Checks a fieldRef as the API server does; throws FieldPathError with the kubelet's wording. */
export function checkFieldRef(ref: FieldRef): void {
  if (ref.fieldPath === '') throw new FieldPathError('fieldRef.fieldPath: is required')
  if (ref.apiVersion !== 'v1') throw new FieldPathError(`unsupported pod version: ${ref.apiVersion} (fieldRef.apiVersion must be v1)`)
  const sub = splitSubscript(ref.fieldPath)
  if (sub === undefined && !VOLUME_FIELD_PATHS.includes(ref.fieldPath)) {
    throw new FieldPathError(`unsupported fieldPath: ${ref.fieldPath} (a volume allows ${VOLUME_FIELD_PATHS.join(', ')})`)
  }
  extractFieldPath(PROBE, ref.fieldPath)
}

const PROBE: Pod = {
  name: '', namespace: '', uid: '', labels: new Map(), annotations: new Map(),
  containers: [], volumeNames: [], volumes: [],
}

/** fieldpath.ExtractFieldPathAsString of the kubelet of `release`: the file's text. */
export function extractFieldPath(pod: Pod, fp: string, release: KubeletRelease = NEWEST): string {
  const sub = splitSubscript(fp)
  if (sub !== undefined) {
    const [path, key] = sub
    const map = path === 'metadata.labels' ? pod.labels : path === 'metadata.annotations' ? pod.annotations : undefined
    if (map === undefined) throw new FieldPathError(`fieldPath "${fp}" does not support subscript`)
    // Annotation keys are validated lowercased, label keys as they are; the lookup is exact.
    const errs = qualifiedNameErrors(path === 'metadata.annotations' ? key.toLowerCase() : key)
    if (errs.length > 0) throw new FieldPathError(`invalid key subscript in ${fp}: ${errs.join(';')}`)
    return map.get(key) ?? ''
  }
  switch (fp) {
    case 'metadata.annotations': return formatMap(pod.annotations, release)
    case 'metadata.labels': return formatMap(pod.labels, release)
    case 'metadata.name': return pod.name
    case 'metadata.namespace': return pod.namespace
    case 'metadata.uid': return pod.uid
  }
  throw new FieldPathError(`unsupported fieldPath: ${fp}`)
}
