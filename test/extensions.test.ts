// The extensions (lib/volume/extensions.ts): every field and format with its exact bytes, where they are
// allowed and refused, the errors that name the item, a pod the API server would refuse, and a
// real mount of a pod file whose pod IP arrives after the mount, seen by an inotify watcher.
import t from 'tap'
import { spawnSync } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import path from 'node:path'
import { readPod, pickVolume, readDownwardAPISource, type Pod } from '../lib/volume/pod.js'
import { project, type Projection } from '../lib/volume/projection.js'
import { readVolumeContext } from '../lib/csi/attributes.js'
import { Volumes, CsiError } from '../lib/csi/volumes.js'
import type { NodeSource } from '../lib/source/node.js'
import { Quantity } from '../lib/volume/quantity.js'
import { Shape } from '../lib/volume/shape.js'
import { cat, dataTarget, MAIN, run, scratch, startDaemon, until, watchDir, writePod } from './fixtures/daemon.js'

const ALLOC = new Map([['cpu', Quantity.parse('4')], ['memory', Quantity.parse('8Gi')]])

const POD = {
  apiVersion: 'v1', kind: 'Pod',
  metadata: {
    name: 'web-1', namespace: 'shop', uid: 'u-1',
    labels: { app: 'web', 123: 'x' },
    annotations: { note: 'a "b"\nc', 'é/x': '\u00e9' },
    ownerReferences: [
      { apiVersion: 'apps/v1', kind: 'ReplicaSet', name: 'web-5d8f7', uid: 'rs-1', controller: true, blockOwnerDeletion: true },
      { apiVersion: 'v1', kind: 'ConfigMap', name: 'odd "name"', uid: 'cm-1' },
    ],
  },
  spec: {
    nodeName: 'node-1', serviceAccountName: 'shop-sa',
    containers: [{ name: 'main', image: 'nginx:1.25', resources: { limits: { cpu: '500m' } } }, { name: 'side', image: 'busybox@sha256:abc' }],
    initContainers: [{ name: 'init', image: 'alpine:3' }],
  },
  status: { hostIP: '10.0.0.5', podIP: '10.1.2.3', podIPs: [{ ip: '10.1.2.3' }, { ip: 'fd00::3' }] },
}

const NODE_LABELS = new Map([['topology.kubernetes.io/zone', 'eu-1a'], ['kubernetes.io/hostname', 'node-1']])

const item = (p: string, fieldPath: string, format?: string): Record<string, unknown> =>
  ({ path: p, fieldRef: { fieldPath }, ...(format !== undefined ? { format } : {}) })

const ALL_ITEMS = [
  item('node', 'spec.nodeName'),
  item('sa', 'spec.serviceAccountName'),
  item('hostIP', 'status.hostIP'),
  item('hostIPs', 'status.hostIPs'),
  item('podIP', 'status.podIP'),
  item('podIPs', 'status.podIPs'),
  item('owners', 'metadata.ownerReferences'),
  item('owners.json', 'metadata.ownerReferences', 'json'),
  item('labels', 'metadata.labels'),
  item('labels.json', 'metadata.labels', 'json'),
  item('annotations.json', 'metadata.annotations', 'json'),
  item('image', "spec.containers['main'].image"),
  item('side-image', "spec.containers['side'].image"),
  item('init-image', "spec.initContainers['init'].image"),
  item('zone', "node.metadata.labels['topology.kubernetes.io/zone']"),
  item('region', "node.metadata.labels['topology.kubernetes.io/region']"),
  item('node-labels', 'node.metadata.labels'),
  item('node-labels.json', 'node.metadata.labels', 'json'),
  { path: 'cpu', resourceFieldRef: { containerName: 'main', resource: 'limits.cpu', divisor: '1m' } },
]

const WANT: Record<string, string> = {
  node: 'node-1',
  sa: 'shop-sa',
  hostIP: '10.0.0.5',
  hostIPs: '10.0.0.5', // a server before 1.28 has no status.hostIPs: the one address
  podIP: '10.1.2.3',
  podIPs: '10.1.2.3\nfd00::3',
  owners: 'apiVersion="apps/v1" blockOwnerDeletion=true controller=true kind="ReplicaSet" name="web-5d8f7" uid="rs-1"\n' +
    'apiVersion="v1" kind="ConfigMap" name="odd \\"name\\"" uid="cm-1"',
  'owners.json': '[{"apiVersion":"apps/v1","blockOwnerDeletion":true,"controller":true,"kind":"ReplicaSet","name":"web-5d8f7","uid":"rs-1"},' +
    '{"apiVersion":"v1","kind":"ConfigMap","name":"odd \\"name\\"","uid":"cm-1"}]',
  labels: '123="x"\napp="web"',
  'labels.json': '{"123":"x","app":"web"}', // keys in byte order, "123" too
  'annotations.json': '{"note":"a \\"b\\"\\nc","é/x":"é"}',
  image: 'nginx:1.25',
  'side-image': 'busybox@sha256:abc',
  'init-image': 'alpine:3',
  zone: 'eu-1a',
  region: '',
  'node-labels': 'kubernetes.io/hostname="node-1"\ntopology.kubernetes.io/zone="eu-1a"',
  'node-labels.json': '{"kubernetes.io/hostname":"node-1","topology.kubernetes.io/zone":"eu-1a"}',
  cpu: '500',
}

const itemsVolume = (items: unknown[], extensions: 'allowed' | 'refused' = 'allowed') =>
  readDownwardAPISource(new Shape({ items }, ''), '--items', extensions)

/** A Node: the allocatable, and its labels (none unless given). */
const node = (labels = new Map<string, string>()) => ({ allocatable: ALLOC, labels })

function render(pod: Pod, items: unknown[], extensions: 'allowed' | 'refused' = 'allowed', labels?: Map<string, string>): Projection {
  return project(pod, itemsVolume(items, extensions), { node: node(labels) })
}

const text = (p: Projection): Record<string, string> => Object.fromEntries(p.files.map((f) => [f.path, f.data.toString()]))

t.test('every extension and format, exact bytes', async (t) => {
  const got = text(render(readPod(POD), ALL_ITEMS, 'allowed', NODE_LABELS))
  t.same(got, WANT)
  for (const [p, want] of Object.entries(WANT)) t.equal(got[p], want, p)
})

t.test('before the pod is scheduled and has addresses; a pod without a Node', async (t) => {
  const bare = readPod({ kind: 'Pod', metadata: { name: 'p' }, spec: { containers: [{ name: 'main', image: 'x' }] } })
  const got = text(render(bare, ALL_ITEMS.filter((i) => !String((i.fieldRef as { fieldPath?: string } | undefined)?.fieldPath).includes("['side']") && !String((i.fieldRef as { fieldPath?: string } | undefined)?.fieldPath).includes("['init']"))))
  t.same(got, {
    node: '', sa: '', hostIP: '', hostIPs: '', podIP: '', podIPs: '', owners: '', 'owners.json': '[]', labels: '', 'labels.json': '{}', 'annotations.json': '{}',
    image: 'x', zone: '', region: '', 'node-labels': '', 'node-labels.json': '{}', cpu: '4000',
  }, 'every file is there, empty (or an empty JSON value) until the field is set')
  t.equal(text(render(readPod({ spec: { serviceAccount: 'old' } }), [item('sa', 'spec.serviceAccountName')])).sa, 'old', 'the deprecated serviceAccount, as the API server copies it')
  t.equal(text(render(readPod({ status: { podIPs: [{ ip: 'fd00::1' }, { ip: '10.0.0.1' }], podIP: 'fd00::1' } }), [item('x', 'status.podIPs')])).x, 'fd00::1\n10.0.0.1', 'the API server\'s order')
})

t.test('errors name the item, one line', async (t) => {
  const pod = readPod(POD)
  const cases: [unknown, string][] = [
    [item('x', 'spec.bogus'), 'volume "--items", item "x": unsupported fieldPath: spec.bogus (dapifs items allow metadata.name, metadata.namespace, metadata.uid, metadata.labels, metadata.annotations, ' +
      "metadata.labels['<KEY>'], metadata.annotations['<KEY>'], and the extensions spec.nodeName, spec.serviceAccountName, status.hostIP, status.hostIPs, status.podIP, status.podIPs, " +
      "metadata.ownerReferences, node.metadata.labels, node.metadata.labels['<KEY>'], spec.containers['<NAME>'].image, spec.initContainers['<NAME>'].image)"],
    [item('x', "node.metadata.labels['Bad Key']"), "volume \"--items\", item \"x\": invalid key subscript in node.metadata.labels['Bad Key']: name part must consist of alphanumeric characters, '-', '_' or '.', " +
      "and must start and end with an alphanumeric character (e.g. 'MyName', or 'my.name', or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"],
    [item('x', "spec.nodeName['a']"), 'volume "--items", item "x": fieldPath "spec.nodeName[\'a\']" does not support subscript'],
    [item('x', "spec.containers['Main'].image"), "volume \"--items\", item \"x\": invalid container name in spec.containers['Main'].image: a container name is a lowercase RFC 1123 label (at most 63 of a-z, 0-9 and '-', starting and ending with a letter or digit)"],
    [item('x', "spec.containers['nope'].image"), 'volume "--items", item "x": container nope not found in spec.containers'],
    [item('x', "spec.initContainers['main'].image"), 'volume "--items", item "x": container main not found in spec.initContainers'],
    [item('x', 'metadata.name', 'json'), 'volume "--items", item "x": format: json is not available for metadata.name (only for metadata.labels, metadata.annotations, node.metadata.labels, metadata.ownerReferences)'],
    [item('x', "metadata.labels['app']", 'json'), "volume \"--items\", item \"x\": format: json is not available for metadata.labels['app'] (only for metadata.labels, metadata.annotations, node.metadata.labels, metadata.ownerReferences)"],
    [item('x', 'metadata.labels', 'yaml'), 'volume "--items", item "x": format: "yaml" is not a format (allowed: json)'],
    [{ path: 'x', format: 'json', resourceFieldRef: { containerName: 'main', resource: 'limits.cpu' } }, 'volume "--items", item "x": format: json is not available for a resourceFieldRef (only for metadata.labels, metadata.annotations, node.metadata.labels, metadata.ownerReferences)'],
    [{ path: 'x', fieldRef: { fieldPath: 'spec.nodeName', apiVersion: 'v2' } }, 'volume "--items", item "x": unsupported pod version: v2 (fieldRef.apiVersion must be v1)'],
  ]
  for (const [it, message] of cases) t.throws(() => render(pod, [it], 'allowed', NODE_LABELS), { message }, message.slice(27, 90))
  t.throws(() => itemsVolume([{ path: 'x', format: 1, fieldRef: { fieldPath: 'metadata.labels' } }]), { message: 'items[0].format: must be a string, not number 1' })
  t.throws(() => readPod({ metadata: { ownerReferences: [{ controller: 'yes' }] } }), { message: 'metadata.ownerReferences[0].controller: must be true or false, not the string "yes"' })
})

t.test('refused: dapifs csi --no-extensions names the item', async (t) => {
  const pod = readPod(POD)
  t.throws(() => render(pod, [item('ip', 'status.podIP')], 'refused'),
    { message: 'volume "--items", item "ip": fieldPath status.podIP is a dapifs extension, which this driver refuses (dapifs csi --no-extensions)' })
  t.throws(() => render(pod, [item('l', 'metadata.labels', 'json')], 'refused'),
    { message: 'volume "--items", item "l": format: json is a dapifs extension, which this driver refuses (dapifs csi --no-extensions)' })
  t.throws(() => render(pod, [item('x', 'spec.bogus')], 'refused'), { message: /^volume "--items", item "x": unsupported fieldPath: spec\.bogus \(a volume allows metadata\.name, .*'<KEY>'\]\)$/ },
    'an unknown path: the kubelet\'s line, without the extensions')
  t.same(text(render(pod, [item('labels', 'metadata.labels')], 'refused')), { labels: '123="x"\napp="web"' }, 'the kubelet\'s fields are served')
  const ctx = { items: '- path: ip\n  fieldRef: {fieldPath: status.podIP}', 'csi.storage.k8s.io/pod.name': 'web-1', 'csi.storage.k8s.io/pod.namespace': 'shop', 'csi.storage.k8s.io/pod.uid': 'u-1' }
  t.throws(() => readVolumeContext(ctx, 'podinfo', 'refused'), { message: 'volume "podinfo", item "ip": fieldPath status.podIP is a dapifs extension, which this driver refuses (dapifs csi --no-extensions)' })
  t.equal(readVolumeContext(ctx, 'podinfo').volume.extensions, 'allowed', 'allowed by default')
})

t.test('a pod\'s own volume stays the kubelet\'s', async (t) => {
  const own = (items: unknown[]): Pod => readPod({ ...POD, spec: { ...POD.spec, volumes: [{ name: 'v', downwardAPI: { items } }] } })
  for (const fp of ['spec.nodeName', 'status.podIP', 'metadata.ownerReferences', 'node.metadata.labels', "spec.containers['main'].image"]) {
    const pod = own([item('x', fp)])
    t.throws(() => project(pod, pickVolume(pod), { node: node() }), { message: `volume "v", item "x": unsupported fieldPath: ${fp} (a volume allows metadata.name, metadata.namespace, metadata.uid, metadata.labels, metadata.annotations, metadata.labels['<KEY>'], metadata.annotations['<KEY>'])` }, fp)
  }
  const pod = own([item('labels', 'metadata.labels', 'json')])
  t.same(text(project(pod, pickVolume(pod), { node: node() })), { labels: '123="x"\napp="web"' }, 'format is not a field of the kubelet\'s items: the kubelet\'s bytes')
})

t.test('a pod the API server would refuse does not render, naming the field', async (t) => {
  const named = (spec: Record<string, unknown>, extra: Record<string, unknown> = {}): unknown => ({
    kind: 'Pod', metadata: { name: 'p' }, spec: { containers: [{ name: 'main', image: 'x' }], volumes: [{ name: 'v', downwardAPI: { items: [item('name', 'metadata.name')] } }], ...spec }, ...extra,
  })
  const REFUSED = '(the API server refuses a pod with such a field)'
  const Q = "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
  const cases: [unknown, string][] = [
    [named({ containers: [{ name: 'main', image: 'x' }, { name: 'side', image: 'y', resources: { requests: { memory: 'lots' } } }] }),
      `spec.containers[1].resources.requests.memory (container "side"): ${Q} ${REFUSED}`],
    [named({ initContainers: [{ name: 'init', resources: { limits: { 'nvidia.com/gpu': '1K' } } }] }),
      `spec.initContainers[0].resources.limits["nvidia.com/gpu"] (container "init"): unable to parse quantity's suffix ${REFUSED}`],
    [named({ containers: [{ name: 'main', env: [{ name: 'E', valueFrom: { resourceFieldRef: { resource: 'limits.cpu', divisor: 'x' } } }] }] }),
      `spec.containers[0].env[0].valueFrom.resourceFieldRef.divisor (container "main"): ${Q} ${REFUSED}`],
    [named({ overhead: { cpu: '1..0' } }), `spec.overhead.cpu: ${Q} ${REFUSED}`],
    [named({ volumes: [{ name: 'v', downwardAPI: { items: [item('name', 'metadata.name')] } }, { name: 'tmp', emptyDir: { sizeLimit: '1 Gi' } }] }),
      `spec.volumes[1].emptyDir.sizeLimit: ${Q} ${REFUSED}`],
    [named({ volumes: [{ name: 'v', downwardAPI: { items: [item('name', 'metadata.name')] } }, { name: 'w', projected: { sources: [{ downwardAPI: { items: [{ path: 'c', resourceFieldRef: { containerName: 'main', resource: 'limits.cpu', divisor: {} } }] } }] } }] }),
      `spec.volumes[1].projected.sources[0].downwardAPI.items[0].resourceFieldRef.divisor: must be a quantity string, not a map ${REFUSED}`],
    [named({}, { metadata: { name: 'p', creationTimestamp: '2026-02-30T00:00:00Z' } }), `metadata.creationTimestamp: must be a time in RFC 3339 form, such as 2006-01-02T15:04:05Z ${REFUSED}`],
    [named({}, { status: { conditions: [{ type: 'Ready', lastTransitionTime: 'yesterday' }] } }), `status.conditions[0].lastTransitionTime: must be a time in RFC 3339 form, such as 2006-01-02T15:04:05Z ${REFUSED}`],
    [named({}, { status: { containerStatuses: [{ name: 'main', state: { running: { startedAt: 5 } } }] } }), `status.containerStatuses[0].state.running.startedAt: must be a time in RFC 3339 form, such as 2006-01-02T15:04:05Z ${REFUSED}`],
  ]
  for (const [raw, message] of cases) {
    const pod = readPod(raw)
    t.throws(() => project(pod, pickVolume(pod, 'v'), { node: node() }), { message }, message.slice(0, 60))
  }
  const fine = readPod(named({ overhead: { cpu: '250m' } }, {
    // A Date: @kubernetes/client-node's typed objects hold times parsed already.
    metadata: { name: 'p', creationTimestamp: '2026-11-21T11:39:14Z', deletionTimestamp: new Date('2026-11-21T11:40:00Z'), managedFields: [{ time: '2026-11-21T11:39:14.123+01:00' }] },
    status: { startTime: '2024-02-29T23:59:59Z', conditions: [{ lastProbeTime: null }] },
  }))
  t.same(text(project(fine, pickVolume(fine), { node: node() })), { name: 'p' }, 'valid quantities and times, null times: renders')
  // An item that reads the bad quantity keeps the item's error, as before.
  const read = readPod(named({ containers: [{ name: 'main', resources: { limits: { cpu: 'abc' } } }], volumes: [{ name: 'v', downwardAPI: { items: [{ path: 'cpu', resourceFieldRef: { containerName: 'main', resource: 'limits.cpu' } }] } }] }))
  t.throws(() => project(read, pickVolume(read), { node: node() }), { message: /^volume "v", item "cpu": spec\.containers\[0\]\.resources\.limits\.cpu: quantities must match/ })
})

t.test('the CSI driver answers INVALID_ARGUMENT for such a pod, naming container and resource', async (t) => {
  // The API server refuses such a pod, so it can only be given to the driver's volumes directly.
  const bad = readPod({ ...POD, spec: { ...POD.spec, containers: [...POD.spec.containers, { name: 'extra', resources: { limits: { memory: '12 Mi' } } }] } })
  const source = {
    synced: true, nodeName: 'node-1', node: { allocatable: ALLOC, labels: NODE_LABELS },
    listen: () => () => {},
    byUid: (uid: string) => (uid === 'u-1' ? { namespace: 'shop', name: 'web-1', uid, pod: bad } : undefined),
    byName: () => undefined,
  } as unknown as NodeSource
  const dir = scratch(t)
  const volumes = new Volumes({ say: () => {}, allowOther: false, extensions: true, kubeletDir: dir })
  volumes.follow(source)
  const target = path.join(dir, 'pods', 'u-1', 'volumes', 'kubernetes.io~csi', 'podinfo', 'mount')
  const err = await volumes.publish({
    volume_id: 'v1', target_path: target, volume_capability: { mount: {} },
    volume_context: { items: '- path: ip\n  fieldRef: {fieldPath: status.podIP}', 'csi.storage.k8s.io/pod.name': 'web-1', 'csi.storage.k8s.io/pod.namespace': 'shop', 'csi.storage.k8s.io/pod.uid': 'u-1' },
  }, Date.now() + 5000).then(() => undefined, (e: unknown) => e)
  t.ok(err instanceof CsiError)
  t.equal((err as CsiError).code, 'INVALID_ARGUMENT')
  t.equal((err as CsiError).message, "pod shop/web-1: spec.containers[2].resources.limits.memory (container \"extra\"): quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$' (the API server refuses a pod with such a field)")
  t.equal(volumes.size, 0, 'nothing published')
  await volumes.stop()
})

// The command line: exit 2 and one line for bad input; --node-labels for a pod file.
function dapifs(...args: string[]): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [MAIN, ...args], { encoding: 'utf8' })
  return { code: r.status, stdout: r.stdout, stderr: r.stderr }
}

t.test('render: every extension from a pod file with --node-labels', async (t) => {
  const dir = scratch(t)
  const pod = path.join(dir, 'pod.json')
  const items = path.join(dir, 'items.json')
  writeFileSync(pod, JSON.stringify(POD))
  writeFileSync(items, JSON.stringify({ items: ALL_ITEMS }))
  const r = dapifs('render', '--pod-file', pod, '--items', items, '--node-labels', 'topology.kubernetes.io/zone=eu-1a,kubernetes.io/hostname=node-1')
  t.equal(r.code, 0, r.stderr)
  const files = JSON.parse(r.stdout).files as Record<string, { content: string; mode: string }>
  t.same(Object.fromEntries(Object.entries(files).map(([k, v]) => [k, v.content])), WANT)

  const bad = (name: string, content: string): string => { writeFileSync(path.join(dir, name), content); return path.join(dir, name) }
  const cases: [string[], RegExp][] = [
    [['render', '--pod-file', pod, '--items', items], /^dapifs: .*items\.json: item "zone": node\.metadata\.labels\['topology\.kubernetes\.io\/zone'\] reads the pod's Node, and a pod file has none: give its labels with --node-labels KEY=VALUE,\.\.\. or follow the pod in its cluster with --pod NAMESPACE\/NAME$/],
    [['render', '--pod-file', pod, '--items', items, '--node-labels', 'zone'], /^dapifs: --node-labels: "zone" is not KEY=VALUE$/],
    [['render', '--pod-file', pod, '--items', items, '--node-labels', 'Bad Key=x'], /^dapifs: --node-labels: "Bad Key" is not a label key: name part must consist of/],
    [['render', '--pod-file', pod, '--items', items, '--node-labels', 'zone=a b'], /^dapifs: --node-labels: zone: "a b" is not a label value/],
    [['render', '--pod-file', pod, '--items', items, '--node-labels', 'a=1,a=2'], /^dapifs: --node-labels: a is given twice$/],
    [['render', '--pod', 'a/b', '--node-labels', 'a=1'], /^dapifs: --node-labels: cannot be combined with --pod: the labels are those of the pod's Node in the cluster$/],
    [['render', '--pod-file', pod, '--items', bad('fmt.yaml', 'items:\n- {path: x, format: json, fieldRef: {fieldPath: metadata.uid}}\n')], /^dapifs: .*fmt\.yaml: volume "--items", item "x": format: json is not available for metadata\.uid \(only for /],
    [['render', '--pod-file', pod, '--items', bad('unknown.yaml', 'items:\n- {path: x, fieldRef: {fieldPath: status.phase}}\n')], /^dapifs: .*unknown\.yaml: volume "--items", item "x": unsupported fieldPath: status\.phase \(dapifs items allow /],
    [['render', '--pod-file', bad('refused.json', JSON.stringify({ ...POD, spec: { ...POD.spec, containers: [...POD.spec.containers, { name: 'x', resources: { requests: { cpu: '1 cpu' } } }] } })), '--items', bad('ok.yaml', 'items:\n- {path: n, fieldRef: {fieldPath: spec.nodeName}}\n')],
      /^dapifs: .*refused\.json: spec\.containers\[2\]\.resources\.requests\.cpu \(container "x"\): quantities must match the regular expression .* \(the API server refuses a pod with such a field\)$/],
  ]
  for (const [args, re] of cases) {
    const r = dapifs(...args)
    t.equal(r.code, 2, `exit 2: ${args.slice(-2).join(' ')}`)
    t.match(r.stderr.trimEnd(), re)
    t.equal(r.stderr.split('\n').length, 2, 'exactly one line')
    t.equal(r.stdout, '', 'nothing on stdout')
  }
})

t.test('a mount of every extension; the pod IP arrives after the mount, with inotify events', async (t) => {
  const dir = scratch(t)
  const podFile = path.join(dir, 'pod.json')
  const noIP = { ...POD, status: { hostIP: '10.0.0.5' } }
  writePod(podFile, noIP)
  const items = path.join(dir, 'items.json')
  writeFileSync(items, JSON.stringify({ items: ALL_ITEMS }))
  const d = await startDaemon(t, ['--pod-file', podFile, '--items', items, '--node-labels', 'topology.kubernetes.io/zone=eu-1a,kubernetes.io/hostname=node-1'])
  for (const [p, want] of Object.entries(WANT)) {
    t.equal(await cat(path.join(d.mnt, p)), p === 'podIP' || p === 'podIPs' ? '' : want, `${p}: exact bytes on the mount`)
  }
  const before = await dataTarget(d.mnt)
  const w = await watchDir(t, d.mnt)
  const mark = d.lines.length
  writePod(podFile, POD)
  await d.waitFor(/flipped to \.\.\d{4}_.*: "podIP", "podIPs" changed$/, mark)
  t.equal(await cat(path.join(d.mnt, 'podIP')), '10.1.2.3', 'the pod IP, once assigned')
  t.equal(await cat(path.join(d.mnt, 'podIPs')), '10.1.2.3\nfd00::3')
  t.not(await dataTarget(d.mnt), before, '..data flipped')
  t.ok(await until(async () => w.events().length >= 3, 5000))
  t.same(w.events(), ['CREATE ..data_tmp', 'MOVED_FROM ..data_tmp', 'MOVED_TO ..data'], 'the atomic writer\'s events')

  // A pod the API server would refuse, at run time: logged once, the last good generation kept.
  const good = await dataTarget(d.mnt)
  const m2 = d.lines.length
  writePod(podFile, { ...POD, spec: { ...POD.spec, containers: [...POD.spec.containers, { name: 'x', resources: { limits: { memory: '1 Gi' } } }] } })
  const line = await d.waitFor(/container "x"/, m2)
  t.match(line, /^dapifs: spec\.containers\[2\]\.resources\.limits\.memory \(container "x"\): quantities must match .* \(still serving \.\.\d{4}_/)
  t.equal(await dataTarget(d.mnt), good, 'still the last good generation')
  t.equal(await cat(path.join(d.mnt, 'podIP')), '10.1.2.3')
  t.equal(await d.stop(), 0)
})

t.test('mount refuses bad extension input at start: exit 2, nothing mounted', async (t) => {
  const dir = scratch(t)
  const podFile = path.join(dir, 'pod.json')
  writePod(podFile, POD)
  const items = path.join(dir, 'items.yaml')
  writeFileSync(items, 'items:\n- {path: zone, fieldRef: {fieldPath: node.metadata.labels}}\n')
  const mnt = path.join(dir, 'mnt')
  await run('mkdir', [mnt])
  const r = await run(process.execPath, [MAIN, 'mount', mnt, '--pod-file', podFile, '--items', items])
  t.equal(r.code, 2)
  t.match(r.stderr, /^dapifs: .*items\.yaml: item "zone": node\.metadata\.labels reads the pod's Node, and a pod file has none: /)
  t.equal(r.stderr.trim().split('\n').length, 1)
  t.not((await run('mountpoint', ['-q', mnt])).code, 0, 'nothing mounted')
})

