import t from 'tap'
import { readPod, pickVolume } from '../lib/volume/pod.js'
import { project, type Projection } from '../lib/volume/projection.js'
import { cleanPath, pathProblem } from '../lib/volume/itempath.js'
import { Quantity } from '../lib/volume/quantity.js'
import type { Allocatable } from '../lib/volume/resource.js'

const alloc = (m: Record<string, string>): Allocatable => new Map(Object.entries(m).map(([k, v]) => [k, Quantity.parse(v)]))
const NODE = alloc({ cpu: '4', memory: '8Gi', 'ephemeral-storage': '100Gi' })

function podWith(items: unknown[], extra: { resources?: unknown; defaultMode?: number; fsGroup?: number; labels?: unknown } = {}): unknown {
  return {
    apiVersion: 'v1', kind: 'Pod',
    metadata: { name: 'p', namespace: 'ns', uid: 'u-1', labels: extra.labels ?? { a: '1' } },
    spec: {
      ...(extra.fsGroup !== undefined ? { securityContext: { fsGroup: extra.fsGroup } } : {}),
      containers: [{ name: 'c', resources: extra.resources ?? {} }],
      initContainers: [{ name: 'init', resources: { limits: { cpu: '3' } } }],
      volumes: [{ name: 'v', downwardAPI: { items, ...(extra.defaultMode !== undefined ? { defaultMode: extra.defaultMode } : {}) } }],
    },
  }
}

function render(pod: unknown, node: Allocatable = NODE, fsGroup?: number): Projection {
  const p = readPod(pod)
  return project(p, pickVolume(p), fsGroup !== undefined ? { node: { allocatable: node, labels: new Map() }, fsGroup } : { node: { allocatable: node, labels: new Map() } })
}

const text = (p: Projection): Record<string, string> => Object.fromEntries(p.files.map((f) => [f.path, f.data.toString()]))
const modes = (p: Projection): Record<string, string> => Object.fromEntries(p.files.map((f) => [f.path, f.mode.toString(8)]))
const res = (resource: string, divisor?: string, containerName = 'c'): unknown =>
  ({ path: 'x', resourceFieldRef: { containerName, resource, ...(divisor !== undefined ? { divisor } : {}) } })

t.test('resource values with every divisor', async (t) => {
  const cases: [Record<string, unknown>, string, string | undefined, string][] = [
    // resources, resource, divisor, file
    [{ limits: { cpu: '250m' } }, 'limits.cpu', undefined, '1'],
    [{ limits: { cpu: '1250m' } }, 'limits.cpu', '1', '2'],
    [{ limits: { cpu: '1250m' } }, 'limits.cpu', '1m', '1250'],
    [{ limits: { cpu: '2' } }, 'limits.cpu', '1m', '2000'],
    [{ limits: { cpu: '0.5' } }, 'limits.cpu', '0', '1'],
    [{ limits: { cpu: '100n' } }, 'limits.cpu', '1m', '1'],
    [{ limits: { cpu: '3920m' } }, 'limits.cpu', '1000m', '4'],
    [{ limits: { cpu: '1500m' } }, 'limits.cpu', '0.001', '1500'],
    [{ requests: { cpu: '125m' } }, 'requests.cpu', '1m', '125'],
    [{ limits: { memory: '64Mi' } }, 'limits.memory', undefined, '67108864'],
    [{ limits: { memory: '32Mi' } }, 'limits.memory', '1Mi', '32'],
    [{ limits: { memory: '64Mi' } }, 'limits.memory', '1G', '1'],
    [{ limits: { memory: '129M' } }, 'limits.memory', '1Mi', '124'],
    [{ limits: { memory: '1Gi' } }, 'limits.memory', '1M', '1074'],
    [{ limits: { memory: '1Gi' } }, 'limits.memory', '1G', '2'],
    [{ limits: { memory: '500M' } }, 'limits.memory', '1Gi', '1'],
    [{ limits: { memory: '1k' } }, 'limits.memory', '1Ki', '1'],
    [{ limits: { memory: '1.5' } }, 'limits.memory', '1', '2'],
    [{ limits: { memory: '1m' } }, 'limits.memory', '1', '1'],
    [{ limits: { memory: '0.1Ki' } }, 'limits.memory', '1', '103'],
    [{ limits: { memory: '100Gi' } }, 'limits.memory', '1k', '107374183'],
    [{ limits: { memory: '1e3' } }, 'limits.memory', '1', '1000'],
    [{ limits: { memory: '1152921504606846976' } }, 'limits.memory', '1', '1152921504606846976'], // 2^60, exactly
    [{ limits: { memory: '9007199254740993' } }, 'limits.memory', '1', '9007199254740992'], // float64, as Go
    [{ limits: { memory: '12345678901234567' } }, 'limits.memory', '1', '12345678901234568'],
    [{ limits: { memory: '8Ei' } }, 'limits.memory', '1', '-9223372036854775808'], // int64(2^63) on amd64
    [{ limits: { memory: '5Ti' } }, 'limits.memory', '1k', '5497558139'],
    [{ limits: { memory: '5Ti' } }, 'limits.memory', '1T', '6'],
    [{ limits: { memory: '5Ti' } }, 'limits.memory', '1Ti', '5'],
    [{ limits: { memory: '3Pi' } }, 'limits.memory', '1P', '4'],
    [{ limits: { memory: '3Pi' } }, 'limits.memory', '1Pi', '3'],
    [{ limits: { memory: '2Ei' } }, 'limits.memory', '1E', '3'],
    [{ limits: { memory: '2Ei' } }, 'limits.memory', '1Ei', '2'],
    [{ limits: { 'ephemeral-storage': '1Gi' } }, 'limits.ephemeral-storage', '1Mi', '1024'],
    [{ requests: { 'ephemeral-storage': '1G' } }, 'requests.ephemeral-storage', '1M', '1000'],
    [{ limits: { 'hugepages-2Mi': '4Mi' } }, 'limits.hugepages-2Mi', '1Mi', '4'],
    [{ requests: { 'hugepages-1Gi': '2Gi' } }, 'requests.hugepages-1Gi', '1Gi', '2'],
    // node allocatable stands in for an absent or zero limit (cpu, memory, ephemeral-storage)
    [{}, 'limits.cpu', '1m', '4000'],
    [{ limits: { cpu: '0' } }, 'limits.cpu', '1', '4'],
    [{}, 'limits.memory', '1Mi', '8192'],
    [{}, 'limits.ephemeral-storage', '1Gi', '100'],
    // ...never for requests or hugepages
    [{}, 'requests.cpu', '1m', '0'],
    [{}, 'requests.memory', undefined, '0'],
    [{}, 'limits.hugepages-2Mi', undefined, '0'],
    // requests default to limits (SetDefaults_Pod)
    [{ limits: { cpu: '1250m' } }, 'requests.cpu', undefined, '2'],
    [{ limits: { memory: '64Mi' }, requests: { cpu: '1' } }, 'requests.memory', '1Mi', '64'],
  ]
  for (const [resources, resource, divisor, want] of cases) {
    t.equal(text(render(podWith([res(resource, divisor)], { resources })))['x'], want,
      `${JSON.stringify(resources)} ${resource} / ${divisor ?? '(unset)'}`)
  }
  t.equal(text(render(podWith([res('limits.cpu', '1m', 'init')])))['x'], '3000', 'init containers are searched too')
  t.equal(text(render(podWith([res('limits.memory')]), new Map()))['x'], '0', 'no allocatable: 0')
})

t.test('resource errors', async (t) => {
  const fails = (item: unknown, re: RegExp, msg: string): void => {
    t.throws(() => render(podWith([item], { resources: { limits: { cpu: 'abc' } } })), { message: re }, msg)
  }
  fails(res('limits.cpu', '1', 'nope'), /^volume "v", item "x": container nope not found$/, 'missing container')
  fails(res('limits.gpu'), /unsupported container resource : limits\.gpu \(allowed: limits\.cpu, /, 'unknown resource')
  fails(res('limits.cpu', '1k'), /divisor: "1k" is not allowed: only divisor's values 1m and 1 are supported with the cpu resource/, 'cpu divisor')
  fails(res('limits.memory', '1e3'), /only divisor's values 1, 1k, 1M, 1G, 1T, 1P, 1E, 1Ki, 1Mi, 1Gi, 1Ti, 1Pi, 1Ei are supported with the memory resource/, 'memory divisor')
  fails(res('limits.memory', '1024'), /"1024" is not allowed/, 'non-canonical divisor')
  fails(res('limits.ephemeral-storage', '2'), /supported with the local ephemeral storage resource/, 'ephemeral-storage divisor')
  fails(res('limits.hugepages-2Mi', '1m'), /supported with the hugepages resource/, 'hugepages divisor')
  fails(res('limits.cpu', 'x'), /divisor: quantities must match the regular expression/, 'unparsable divisor')
  fails(res('limits.cpu'), /^volume "v", item "x": spec\.containers\[0\]\.resources\.limits\.cpu: quantities must match/, 'bad quantity in the pod')
  fails({ path: 'x', resourceFieldRef: { resource: 'limits.cpu' } }, /containerName: is required/, 'no containerName')
})

t.test('modes and fsGroup', async (t) => {
  const items = [
    { path: 'default', fieldRef: { fieldPath: 'metadata.name' } },
    { path: 'ro', mode: 0o400, fieldRef: { fieldPath: 'metadata.name' } },
    { path: 'zero', mode: 0, fieldRef: { fieldPath: 'metadata.name' } },
    { path: 'all', mode: 0o777, fieldRef: { fieldPath: 'metadata.name' } },
  ]
  t.same(modes(render(podWith(items))), { all: '777', default: '644', ro: '400', zero: '0' })
  t.same(modes(render(podWith(items, { defaultMode: 0o600 }))), { all: '777', default: '600', ro: '400', zero: '0' }, 'item mode replaces defaultMode')
  const fg = render(podWith(items, { fsGroup: 1234 }))
  t.same(modes(fg), { all: '777', default: '644', ro: '440', zero: '440' }, 'fsGroup adds 0440')
  t.equal(fg.gid, 1234)
  t.equal(render(podWith(items)).gid, undefined)
  t.equal(render(podWith(items, { fsGroup: 1 }), NODE, 99).gid, 99, 'the flag overrides the pod')
  t.throws(() => render(podWith([{ path: 'x', mode: 0o1000, fieldRef: { fieldPath: 'metadata.name' } }])), { message: 'volume "v", item "x": mode 512: must be a number between 0 and 0777 (octal), both inclusive' })
  t.throws(() => render(podWith([{ path: 'x', mode: -1, fieldRef: { fieldPath: 'metadata.name' } }])), { message: /mode -1: must be a number between/ })
  t.throws(() => render(podWith(items, { defaultMode: 0o1777 })), { message: 'volume "v", defaultMode: 1023: must be a number between 0 and 0777 (octal), both inclusive' })
})

t.test('path cleaning', async (t) => {
  const cases: [string, string][] = [
    ['this//labels', 'this/labels'], ['./bar', 'bar'], ['a/', 'a'], ['foo////bar', 'foo/bar'], ['a/./b/', 'a/b'],
    ['a/b/../c', 'a/c'], ['', '.'], ['.', '.'], ['/a/../..', '/'], ['../a', '../a'], ['a/..b', 'a/..b'], ['.dotfile', '.dotfile'],
  ]
  for (const [raw, want] of cases) t.equal(cleanPath(raw), want, JSON.stringify(raw))
})

t.test('rejected paths', async (t) => {
  const cases: [string, string][] = [
    ['', 'must not be empty'],
    ['/dev/null', 'must be a relative path'],
    ['hello/../etc/passwd', "must not contain '..'"],
    ['..', "must not contain '..'"],
    ['../a', "must not contain '..'"],
    ['..sneaky.txt', "must not start with '..'"],
    ['..data', "must not start with '..'"],
    ['..data/x', "must not start with '..'"],
    ['./..data', "must not start with '..'"], // passes the API, fails the writer after cleaning
    ['.', 'must name a file, not the volume directory itself'],
    ['./', 'must name a file, not the volume directory itself'],
    ['x'.repeat(4097), 'must be at most 4096 bytes long'],
    ['a/' + 'x'.repeat(256), 'each path element must be at most 255 bytes long'],
    ['a\0b', 'must not contain a NUL byte'],
  ]
  for (const [raw, want] of cases) t.equal(pathProblem(raw), want, JSON.stringify(raw.slice(0, 20)))
  for (const ok of ['i/am/well/behaved.txt', 'a/..b', '.dotfile', 'x'.repeat(255), `${'a/'.repeat(2047)}b`]) t.equal(pathProblem(ok), undefined, ok.slice(0, 20))
  t.throws(() => render(podWith([{ path: '../x', fieldRef: { fieldPath: 'metadata.name' } }])), { message: `volume "v", item "../x": path must not contain '..'` })
})

t.test('items: nesting, duplicates, conflicts, bad items', async (t) => {
  const name = { fieldPath: 'metadata.name' }
  const ns = { fieldPath: 'metadata.namespace' }
  t.same(text(render(podWith([{ path: 'this//labels', fieldRef: { fieldPath: 'metadata.labels' } }, { path: 'a/b/c', fieldRef: name }]))),
    { 'a/b/c': 'p', 'this/labels': 'a="1"' })
  t.same(text(render(podWith([{ path: 'x', fieldRef: name }, { path: './x', fieldRef: ns }]))), { x: 'ns' }, 'a later duplicate wins (downwardAPI)')
  const projected = readPod({ metadata: { name: 'p' }, spec: { volumes: [{ name: 'pv', projected: { sources: [
    { downwardAPI: { items: [{ path: 'x', fieldRef: name }] } }, { configMap: { name: 'cm' } },
    { downwardAPI: { items: [{ path: 'x/', fieldRef: ns }] } }] } }] } })
  t.throws(() => project(projected, pickVolume(projected), { node: { allocatable: NODE, labels: new Map() } }), { message: 'volume "pv", item "x/": conflicting duplicate paths' })
  t.throws(() => render(podWith([{ path: 'a', fieldRef: name }, { path: 'a/b', fieldRef: name }])), { message: 'volume "v", item "a/b": path conflicts with item "a", which is a file' })
  t.throws(() => render(podWith([{ path: 'x' }])), { message: 'volume "v", item "x": one of fieldRef and resourceFieldRef is required' })
  t.throws(() => render(podWith([{ path: 'x', fieldRef: name, resourceFieldRef: { containerName: 'c', resource: 'limits.cpu' } }])), { message: /can not be specified simultaneously/ })
  t.throws(() => render(podWith([{ path: 'ok', fieldRef: name }, { path: 'bad', fieldRef: { fieldPath: 'metadata.foo' } }])), { message: /^volume "v", item "bad": unsupported fieldPath: metadata\.foo/, }, 'one bad item fails the volume')
  t.same(render(podWith([])).files, [], 'no items, no files')
})

t.test('pod shape errors name the field', async (t) => {
  t.throws(() => readPod({ kind: 'ConfigMap' }), { message: 'kind: must be Pod, not "ConfigMap"' })
  t.throws(() => readPod({ kind: 'Pod', metadata: { labels: { a: 1 } } }), { message: 'metadata.labels.a: must be a string, not number 1' })
  t.throws(() => readPod({ kind: 'Pod', metadata: { labels: { 'app.kubernetes.io/name': [] } } }), { message: 'metadata.labels["app.kubernetes.io/name"]: must be a string, not a list' })
  t.throws(() => readPod({ spec: { containers: { a: 1 } } }), { message: 'spec.containers: must be a list, not a map' })
  t.throws(() => readPod({ spec: { volumes: [{ name: 'v', downwardAPI: { items: [{ path: 'x', mode: '0644' }] } }] } }), { message: 'spec.volumes[0].downwardAPI.items[0].mode: must be an integer, not the string "0644"' })
  t.throws(() => readPod([]), { message: 'must be a map, not a list' })
  t.equal(readPod({ metadata: { name: 'x' } }).namespace, 'default')
})

t.test('choosing the volume', async (t) => {
  const two = readPod({ spec: { volumes: [
    { name: 'a', downwardAPI: { items: [] } }, { name: 'cfg', configMap: { name: 'x' } },
    { name: 'b', projected: { sources: [{ downwardAPI: { items: [] } }] } }, { name: 'c', projected: { sources: [{ secret: { name: 's' } }] } }] } })
  t.throws(() => pickVolume(two), { message: 'spec.volumes: the pod has several downward API volumes ("a", "b"); pick one with --volume NAME' })
  t.equal(pickVolume(two, 'b').kind, 'projected')
  t.throws(() => pickVolume(two, 'cfg'), { message: '--volume: "cfg" is not a downwardAPI volume or a projected volume with downwardAPI sources (downward API volumes: "a", "b")' })
  t.throws(() => pickVolume(two, 'zz'), { message: '--volume: "zz" is not a volume of this pod (downward API volumes: "a", "b")' })
  t.throws(() => pickVolume(readPod({ spec: {} })), { message: /^spec\.volumes: the pod has no downwardAPI volume/ })
})
