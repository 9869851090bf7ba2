import t from 'tap'
import { spawnSync } from 'node:child_process'
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'

const MAIN = path.resolve('dist/main.js')

function dapifs(...args: string[]): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [MAIN, ...args], { encoding: 'utf8' })
  return { code: r.status, stdout: r.stdout, stderr: r.stderr }
}

const dir = mkdtempSync(path.join(os.tmpdir(), 'dapifs-cli-'))
t.teardown(() => rmSync(dir, { recursive: true, force: true }))
function file(name: string, content: string): string {
  const p = path.join(dir, name)
  writeFileSync(p, content)
  return p
}

t.test('render prints the kubelet\'s files for the example pod', async (t) => {
  const r = dapifs('render', '--pod-file', 'examples/dapi-volume.yaml', '--node-allocatable', 'cpu=4,memory=8Gi')
  t.equal(r.code, 0, r.stderr)
  t.equal(r.stderr, '')
  const m = (content: string) => ({ content, mode: '0644' })
  t.same(JSON.parse(r.stdout), {
    files: {
      annotations: m('build="two"\nbuilder="john-doe"'),
      cpu_limit: m('250'),
      cpu_request: m('125'),
      labels: m('cluster="test-cluster1"\nrack="rack-22"\nzone="us-est-coast"'),
      mem_limit: m('64'),
      mem_request: m('32'),
      name: m('kubernetes-downwardapi-volume-example'),
      namespace: m('default'),
      uid: m('6f4c2a8e-2b1d-4c7e-9a51-3d0f8e7b5c21'),
      zone: m('us-est-coast'),
    },
  })
})

const POD = `apiVersion: v1
kind: Pod
metadata:
  name: p
  labels: {app: web}
  annotations:
    note: "line one\\nline \\"two\\""
spec:
  securityContext: {fsGroup: 2000}
  containers:
  - name: main
    resources: {requests: {cpu: 0.5}}
  volumes:
  - name: one
    downwardAPI:
      defaultMode: 0600
      items:
      - {path: cpu, resourceFieldRef: {containerName: main, resource: limits.cpu, divisor: 1m}}
      - {path: note, mode: 0400, fieldRef: {fieldPath: "metadata.annotations['note']"}}
  - name: two
    projected:
      sources:
      - downwardAPI:
          items:
          - {path: meta/labels, fieldRef: {fieldPath: metadata.labels}}
`

t.test('YAML 1.1 octal modes, node allocatable, fsGroup, --volume', async (t) => {
  const pod = file('pod.yaml', POD)
  const r = dapifs('render', '--pod-file', pod, '--volume', 'one', '--node-allocatable', 'cpu=3800m')
  t.equal(r.code, 0, r.stderr)
  t.same(JSON.parse(r.stdout), {
    files: { cpu: { content: '3800', mode: '0640' }, note: { content: 'line one\nline "two"', mode: '0440' } },
    gid: 2000,
  })
  const two = dapifs('render', '--pod-file', pod, '--volume', 'two', '--fs-group', '7')
  t.same(JSON.parse(two.stdout), { files: { 'meta/labels': { content: 'app="web"', mode: '0644' } }, gid: 7 })
})

t.test('--items replaces the pod\'s volumes; JSON pod files work', async (t) => {
  const pod = file('pod.json', JSON.stringify({ apiVersion: 'v1', kind: 'Pod', metadata: { name: 'j', labels: { b: '2', a: '1' } }, spec: { containers: [{ name: 'c' }] } }))
  const items = file('items.yaml', 'defaultMode: 0444\nitems:\n- path: labels\n  fieldRef: {fieldPath: metadata.labels}\n- path: mem\n  resourceFieldRef: {containerName: c, resource: limits.memory, divisor: 1Mi}\n')
  const r = dapifs('render', '--pod-file', pod, '--items', items, '--node-allocatable', 'memory=1Gi')
  t.equal(r.code, 0, r.stderr)
  t.same(JSON.parse(r.stdout), { files: { labels: { content: 'a="1"\nb="2"', mode: '0444' }, mem: { content: '1024', mode: '0444' } } })
})

t.test('without --node-allocatable, this machine stands in for the node', async (t) => {
  const pod = file('pod-cpu.json', JSON.stringify({ kind: 'Pod', metadata: { name: 'x' }, spec: { containers: [{ name: 'c' }], volumes: [{ name: 'v', downwardAPI: { items: [{ path: 'cpu', resourceFieldRef: { containerName: 'c', resource: 'limits.cpu' } }, { path: 'mem', resourceFieldRef: { containerName: 'c', resource: 'limits.memory' } }] } }] } }))
  const r = dapifs('render', '--pod-file', pod)
  t.equal(r.code, 0, r.stderr)
  const files = JSON.parse(r.stdout).files
  t.equal(files.cpu.content, String(os.availableParallelism()))
  t.equal(files.mem.content, String(os.totalmem()))
})

t.test('--kubelet-version: renders as that release\'s kubelet', async (t) => {
  const pod = file('release-pod.yaml', `apiVersion: v1
kind: Pod
metadata: {name: p, annotations: {face: "\\U0001FAE8"}}
spec:
  containers: [{name: c, image: x, resources: {limits: {hugepages-2Mi: 4Mi}}}]
  volumes:
  - name: v
    downwardAPI:
      items:
      - {path: annotations, fieldRef: {fieldPath: metadata.annotations}}
`)
  const huge = file('release-huge.yaml', 'items:\n- {path: huge, resourceFieldRef: {containerName: c, resource: limits.hugepages-2Mi, divisor: 1Mi}}\n')
  const annotations = (...flags: string[]): string => JSON.parse(dapifs('render', '--pod-file', pod, ...flags).stdout).files.annotations.content
  t.equal(annotations(), 'face="\u{1FAE8}"', 'the default, 1.37 (Go 1.26, Unicode 15.0): literal')
  t.equal(annotations('--kubelet-version', 'v1.37.2'), 'face="\u{1FAE8}"')
  t.equal(annotations('--kubelet-version', '1.20'), 'face="\\U0001fae8"', '1.20 (Go 1.19, Unicode 13): escaped')
  t.same(JSON.parse(dapifs('render', '--pod-file', pod, '--items', huge).stdout).files.huge, { content: '4', mode: '0644' }, 'hugepages: read on 1.37')
  const old = dapifs('render', '--pod-file', pod, '--items', huge, '--kubelet-version', '1.21')
  t.equal(old.code, 2)
  t.equal(old.stderr, `dapifs: ${huge}: volume "--items", item "huge": resourceFieldRef.resource: Unsupported value: "limits.hugepages-2Mi": supported values: ` +
    '"limits.cpu", "limits.ephemeral-storage", "limits.memory", "requests.cpu", "requests.ephemeral-storage", "requests.memory" (Kubernetes 1.21; hugepages from 1.22)\n')
  for (const [v, why] of [['1.19', 'Kubernetes 1.19 is not supported: dapifs renders as the kubelet of 1.20 to 1.37'],
    ['1.38.0', 'Kubernetes 1.38.0 is not supported: dapifs renders as the kubelet of 1.20 to 1.37, and does not guess what a newer one writes'],
    ['latest', '"latest" is not a Kubernetes release: give one like 1.37 or v1.37.2 (supported: 1.20 to 1.37)']]) {
    const r = dapifs('render', '--pod-file', pod, '--kubelet-version', v!)
    t.equal(r.code, 2, v)
    t.equal(r.stderr, `dapifs: --kubelet-version: ${why}\n`, v)
  }
})

t.test('bad input: one line naming the problem, exit 2, nothing on stdout', async (t) => {
  const pod = file('pod2.yaml', POD)
  const cases: [string[], RegExp][] = [
    [[], /^dapifs: a command is required \(mount, render, csi, demo, help\)$/],
    [['frobnicate'], /^dapifs: unknown command "frobnicate" \(commands: mount, render, csi, demo, help\)$/],
    [['render'], /^dapifs: one of --pod-file FILE or --pod NAMESPACE\/NAME is required: the pod to render$/],
    [['render', '--pod-file'], /^dapifs: Option '--pod-file <value>' argument missing$/],
    [['render', '--pdo', 'x'], /^dapifs: Unknown option '--pdo'$/],
    [['render', '--pod', 'x'], /^dapifs: --pod: "x" is not NAMESPACE\/NAME/],
    [['render', '--pod', 'a/b', '--pod-file', 'f'], /^dapifs: --pod: cannot be combined with --pod-file$/],
    [['render', '--pod-file', pod, 'extra'], /^dapifs: unexpected argument "extra"$/],
    [['render', '--pod-file', path.join(dir, 'nope.yaml')], /^dapifs: --pod-file: cannot read .*nope\.yaml: no such file$/],
    [['render', '--pod-file', dir], /^dapifs: --pod-file: cannot read .*: is a directory$/],
    [['render', '--pod-file', file('empty.yaml', '')], /^dapifs: .*empty\.yaml: is empty; expected a Pod$/],
    [['render', '--pod-file', file('notyaml.yaml', 'a: [b\n')], /^dapifs: .*notyaml\.yaml: not valid YAML or JSON: .* at line \d+, column \d+$/],
    [['render', '--pod-file', file('cm.yaml', 'apiVersion: v1\nkind: ConfigMap\ndata: {a: b}\n')], /^dapifs: .*cm\.yaml: kind: must be Pod, not "ConfigMap"$/],
    [['render', '--pod-file', file('many.yaml', `${POD}---\n${POD}`)], /^dapifs: .*many\.yaml: holds 2 objects with 2 of them a Pod; expected exactly one$/],
    [['render', '--pod-file', file('scalar.yaml', 'hello\n')], /^dapifs: .*scalar\.yaml: must be a map, not the string "hello"$/],
    [['render', '--pod-file', pod], /^dapifs: .*pod2\.yaml: spec\.volumes: the pod has several downward API volumes \("one", "two"\); pick one with --volume NAME$/],
    [['render', '--pod-file', pod, '--volume', 'three'], /^dapifs: --volume: "three" is not a volume of this pod \(downward API volumes: "one", "two"\)$/],
    [['render', '--volume', 'one', '--pod-file', file('nocontainer.yaml', POD.replace('containerName: main', 'containerName: side'))], /^dapifs: .*: volume "one", item "cpu": container side not found$/],
    [['render', '--volume', 'one', '--pod-file', file('baddiv.yaml', POD.replace('divisor: 1m', 'divisor: 1k'))], /^dapifs: .*: volume "one", item "cpu": divisor: "1k" is not allowed: only divisor's values 1m and 1 are supported with the cpu resource$/],
    [['render', '--pod-file', pod, '--volume', 'one', '--items', pod], /^dapifs: --items: cannot be combined with --volume/],
    [['render', '--pod-file', pod, '--items', file('noitems.yaml', 'defaultMode: 420\n')], /^dapifs: .*noitems\.yaml: items: is required/],
    [['render', '--pod-file', pod, '--node-allocatable', 'gpu=1'], /^dapifs: --node-allocatable: unknown resource "gpu" \(allowed: cpu, memory, ephemeral-storage\)$/],
    [['render', '--pod-file', pod, '--node-allocatable', 'cpu=lots'], /^dapifs: --node-allocatable: cpu: quantities must match/],
    [['render', '--pod-file', pod, '--node-allocatable', 'cpu'], /^dapifs: --node-allocatable: "cpu" is not NAME=QUANTITY/],
    [['render', '--pod-file', pod, '--fs-group=-1'], /^dapifs: --fs-group: "-1" is not a numeric id from 0 to 4294967294$/],
    [['render', '--pod-file', pod, '--fs-group', 'staff'], /^dapifs: --fs-group: "staff" is not a numeric id from 0 to 4294967294$/],
    [['render', '--pod-file', pod, '--fs-group', '-1'], /^dapifs: Option '--fs-group' argument is ambiguous$/],
  ]
  for (const [args, re] of cases) {
    const r = dapifs(...args)
    t.equal(r.code, 2, `exit 2: ${args.join(' ')}`)
    t.match(r.stderr.trimEnd(), re, args.join(' '))
    t.equal(r.stderr.split('\n').length, 2, 'exactly one line')
    t.equal(r.stdout, '', 'nothing on stdout')
  }
})
