// What the API server's decoding refuses in a pod, in the fields no item reads. Decoding a Pod
// parses every resource.Quantity and every metav1.Time in it, and one that does not parse makes
// the whole pod a 400: such a pod is never stored, so no kubelet ever renders it, and neither
// may we. The fields the volume reads are checked where they are read (pod.ts, resource.ts);
// this covers the rest:
//   - quantities: every container's (containers, initContainers, ephemeralContainers) limits
//     and requests and its env resourceFieldRef divisors, spec.overhead, spec.resources,
//     emptyDir.sizeLimit, every downward API item's divisor in every volume, and an ephemeral
//     volume's claim template resources;
//   - times (RFC 3339, as Go's time.Parse takes it): metadata.creationTimestamp and
//     deletionTimestamp, managedFields[].time, status.startTime, the conditions' times, and the
//     container states' startedAt and finishedAt.
// The first problem found is returned, as one line naming the field (and the container).

import { parseQuantity } from './quantity.js'
import { InputError, Shape } from './shape.js'

const CONTAINER_LISTS = ['containers', 'initContainers', 'ephemeralContainers']
const STATUS_LISTS = ['containerStatuses', 'initContainerStatuses', 'ephemeralContainerStatuses']
const REFUSED = 'the API server refuses a pod with such a field'

function quantity(s: Shape, container?: string): void {
  if (!s.present) return
  try {
    parseQuantity(s.value)
  } catch (e) {
    throw new InputError(container === undefined ? s.where : `${s.where} (container ${JSON.stringify(container)})`, `${(e as Error).message} (${REFUSED})`)
  }
}

function quantities(s: Shape, container?: string): void {
  for (const list of ['limits', 'requests']) {
    const m = s.field(list)
    for (const key of Object.keys(m.obj())) quantity(m.field(key), container)
  }
}

const TIME_RE = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})([.,]\d+)?(Z|[+-](\d{2}):(\d{2}))$/

/** Go's time.Parse(time.RFC3339, s) accepts it (fractional seconds are optional when parsing). */
export function isRfc3339(text: string): boolean {
  const m = TIME_RE.exec(text)
  if (!m) return false
  const [year, month, day, hour, minute, second] = m.slice(1, 7).map(Number) as [number, number, number, number, number, number]
  const days = [31, year % 4 === 0 && (year % 100 !== 0 || year % 400 === 0) ? 29 : 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]
  if (month < 1 || month > 12 || day < 1 || day > days[month - 1]! || hour > 23 || minute > 59 || second > 59) return false
  return m[9] === undefined || (Number(m[9]) <= 23 && Number(m[10]) <= 59)
}

function time(s: Shape): void {
  if (!s.present) return
  // The API client has parsed it already (its typed objects hold Dates).
  if (s.value instanceof Date && !Number.isNaN(s.value.getTime())) return
  if (typeof s.value !== 'string' || !isRfc3339(s.value)) {
    s.fail(`must be a time in RFC 3339 form, such as 2006-01-02T15:04:05Z (${REFUSED})`)
  }
}

function containerState(s: Shape): void {
  time(s.field('running').field('startedAt'))
  time(s.field('terminated').field('startedAt'))
  time(s.field('terminated').field('finishedAt'))
}

function divisor(item: Shape): void {
  quantity(item.field('resourceFieldRef').field('divisor'))
}

function check(pod: Shape): void {
  const meta = pod.field('metadata')
  time(meta.field('creationTimestamp'))
  time(meta.field('deletionTimestamp'))
  for (const m of meta.field('managedFields').list()) time(m.field('time'))
  const spec = pod.field('spec')
  for (const list of CONTAINER_LISTS) {
    for (const c of spec.field(list).list()) {
      const name = c.field('name').str()
      quantities(c.field('resources'), name)
      for (const env of c.field('env').list()) quantity(env.field('valueFrom').field('resourceFieldRef').field('divisor'), name)
    }
  }
  const overhead = spec.field('overhead')
  for (const key of Object.keys(overhead.obj())) quantity(overhead.field(key))
  quantities(spec.field('resources'))
  for (const v of spec.field('volumes').list()) {
    quantity(v.field('emptyDir').field('sizeLimit'))
    for (const item of v.field('downwardAPI').field('items').list()) divisor(item)
    for (const source of v.field('projected').field('sources').list()) {
      for (const item of source.field('downwardAPI').field('items').list()) divisor(item)
    }
    quantities(v.field('ephemeral').field('volumeClaimTemplate').field('spec').field('resources'))
  }
  const status = pod.field('status')
  time(status.field('startTime'))
  for (const c of status.field('conditions').list()) {
    time(c.field('lastProbeTime'))
    time(c.field('lastTransitionTime'))
  }
  for (const list of STATUS_LISTS) {
    for (const c of status.field(list).list()) {
      containerState(c.field('state'))
      containerState(c.field('lastState'))
    }
  }
}

/** The first field of the pod that the API server's decoding would refuse, if any. */
export function decodeProblem(pod: Shape): InputError | undefined {
  try {
    check(pod)
    return undefined
  } catch (e) {
    if (e instanceof InputError) return e
    throw e
  }
}
