// resourceFieldRef items: a container's limit or request divided by the divisor, rounded up, as
// the kubelet's ExtractContainerResourceValue computes it:
//   1. find the container (spec.containers, then spec.initContainers);
//   2. an absent or zero cpu / memory / ephemeral-storage *limit* becomes the node's allocatable
//      (never a request, never hugepages);
//   3. cpu:   ceil(float64(q.MilliValue()) / float64(divisor.MilliValue()))
//      other: ceil(float64(q.Value()) / float64(divisor.Value()))
//      printed as int64(result) in decimal.
// Step 3 is float64 arithmetic in Go, so it is float64 arithmetic here: Number(bigint) rounds
// to nearest-even exactly as Go's conversion does. A result of 2^63 or more does not fit the
// int64 conversion; amd64 gives -9223372036854775808 for it, and so do we.
//
// A pod that did not come through the API server lacks its defaulting; requests missing from a
// container that has the same limit are copied from the limit first (SetDefaults_Pod), so a
// manifest renders as the pod the API server would have stored.

import { Quantity, QuantityError, parseQuantity } from './quantity.js'
import type { Container, Pod, ResourceFieldRef } from './pod.js'
import { NEWEST, type KubeletRelease } from './release.js'

export type Allocatable = Map<string, Quantity>

export class ResourceError extends Error {}

const PLAIN_RESOURCES = [
  'limits.cpu', 'limits.memory', 'limits.ephemeral-storage',
  'requests.cpu', 'requests.memory', 'requests.ephemeral-storage',
]
const ALLOWED = [...PLAIN_RESOURCES, 'limits.hugepages-<size>', 'requests.hugepages-<size>'].join(', ')
const CPU_DIVISORS = ['1m', '1']
const BYTE_DIVISORS = ['1', '1k', '1M', '1G', '1T', '1P', '1E', '1Ki', '1Mi', '1Gi', '1Ti', '1Pi', '1Ei']
const MERGED_WITH_ALLOCATABLE = ['cpu', 'memory', 'ephemeral-storage']

const INT64_MIN = -(2n ** 63n)

function resourceKind(resource: string): string | undefined {
  if (PLAIN_RESOURCES.includes(resource)) return resource.slice(resource.indexOf('.') + 1)
  if (/^(limits|requests)\.hugepages-./.test(resource)) return 'hugepages'
  return undefined
}

/** The divisor as the API server accepts it; unset or zero means 1. */
export function parseDivisor(resource: string, raw: unknown): Quantity {
  const kind = resourceKind(resource)
  if (raw === undefined || raw === null) return Quantity.parse('1')
  let d: Quantity
  try {
    d = parseQuantity(raw)
  } catch (e) {
    throw new ResourceError(`divisor: ${(e as Error).message}`)
  }
  if (d.isZero()) return Quantity.parse('1')
  const allowed = kind === 'cpu' ? CPU_DIVISORS : BYTE_DIVISORS
  if (!allowed.includes(d.toString())) {
    const what = kind === 'ephemeral-storage' ? 'local ephemeral storage' : kind
    throw new ResourceError(`divisor: ${JSON.stringify(String(raw))} is not allowed: only divisor's values ` +
      `${kind === 'cpu' ? '1m and 1' : BYTE_DIVISORS.join(', ')} are supported with the ${what} resource`)
  }
  return d
}

/**
 * Checks a resourceFieldRef as the API server of `release` does, before any pod data is looked
 * at. Hugepages are refused where that API server refuses them (up to 1.21), in its words.
 */
export function checkResourceFieldRef(ref: ResourceFieldRef, release: KubeletRelease = NEWEST): void {
  if (ref.containerName === '') throw new ResourceError('resourceFieldRef.containerName: is required in a volume')
  const kind = resourceKind(ref.resource)
  if (kind === undefined) {
    throw new ResourceError(`unsupported container resource : ${ref.resource} (allowed: ${ALLOWED})`)
  }
  if (kind === 'hugepages' && !release.hugePagesInVolumes) {
    throw new ResourceError(`resourceFieldRef.resource: Unsupported value: ${JSON.stringify(ref.resource)}: supported values: ` +
      `${[...PLAIN_RESOURCES].sort().map((r) => JSON.stringify(r)).join(', ')} (Kubernetes ${release.name}; hugepages from 1.22)`)
  }
  parseDivisor(ref.resource, ref.divisor)
}

function quantityOf(c: Container, list: 'limits' | 'requests', name: string): Quantity | undefined {
  let raw = c[list].get(name)
  // SetDefaults_Pod: a request left out where the limit is set is the limit.
  if (list === 'requests' && raw === undefined) raw = c.limits.get(name)
  if (raw === undefined || raw === null) return undefined
  try {
    return parseQuantity(raw)
  } catch (e) {
    if (!(e instanceof QuantityError)) throw e
    throw new ResourceError(`${c.where}.resources.${list}.${name}: ${e.message}`)
  }
}

/** Go's int64(f) on amd64: out of range or NaN gives the most negative int64. */
function goInt64(f: number): bigint {
  if (!Number.isFinite(f) || f >= 2 ** 63 || f < -(2 ** 63)) return INT64_MIN
  return BigInt(Math.trunc(f))
}

/** The file's text for a resourceFieldRef. */
export function resourceValue(ref: ResourceFieldRef, pod: Pod, allocatable: Allocatable, release: KubeletRelease = NEWEST): string {
  checkResourceFieldRef(ref, release)
  const container = pod.containers.find((c) => c.name === ref.containerName)
  if (!container) throw new ResourceError(`container ${ref.containerName} not found`)
  const divisor = parseDivisor(ref.resource, ref.divisor)
  const dot = ref.resource.indexOf('.')
  const list = ref.resource.slice(0, dot) as 'limits' | 'requests'
  const name = ref.resource.slice(dot + 1)
  let q = quantityOf(container, list, name)
  if (list === 'limits' && MERGED_WITH_ALLOCATABLE.includes(name) && (q === undefined || q.isZero())) {
    q = allocatable.get(name) ?? q
  }
  q ??= Quantity.zero
  const [n, d] = name === 'cpu' ? [q.milliValue(), divisor.milliValue()] : [q.value(), divisor.value()]
  return goInt64(Math.ceil(Number(n) / Number(d))).toString()
}
