// The CSI node driver (`dapifs csi`) against a real kube-apiserver, called over gRPC as the
// kubelet calls it: every RPC, idempotence, bad input, pods that are late or are someone else,
// and many volumes of many pods, each read from child processes.
import t from 'tap'
import { existsSync, mkdirSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import * as grpc from '@grpc/grpc-js'
import { cat, dataTarget, mounted, run, scratch, until } from './fixtures/daemon.js'
import { mountsBelow, podInfo, startDriver, type Driver } from './fixtures/csi.js'
import { loadCsi, loadRegistration } from '../lib/csi/server.js'
import { needApiServer, startCluster, type Cluster } from './fixtures/kube.js'

const NS = 'shop'
const NODE = 'node-1'

const ITEMS = `- path: labels
  fieldRef: {fieldPath: metadata.labels}
- path: annotations
  fieldRef: {fieldPath: metadata.annotations}
- path: name
  fieldRef: {fieldPath: metadata.name}
- path: cpu_limit
  resourceFieldRef: {containerName: main, resource: limits.cpu, divisor: 1m}
- path: mem_request
  resourceFieldRef: {containerName: main, resource: requests.memory, divisor: 1Mi}
- path: nested/uid
  fieldRef: {fieldPath: metadata.uid}
  mode: 0400
`

const podBody = (name: string, labels: Record<string, string>, extra: Record<string, unknown> = {}) => ({
  apiVersion: 'v1', kind: 'Pod',
  metadata: { name, namespace: NS, labels, annotations: { owner: 'team-a' } },
  spec: {
    nodeName: NODE,
    containers: [{ name: 'main', image: 'busybox', resources: { requests: { memory: '64Mi' } } }],
    ...extra,
  },
})

const formatLabels = (l: Record<string, string>): string => Object.keys(l).sort().map((k) => `${k}="${l[k]}"`).join('\n')

interface Ctx { k: Cluster; d: Driver }

function context(pod: { metadata?: { name?: string; uid?: string } }, attrs: Record<string, string> = { items: ITEMS }): Record<string, string> {
  return { ...attrs, ...podInfo(NS, pod.metadata!.name!, pod.metadata!.uid!) }
}

const publishReq = (target: string, ctx: Record<string, string>, volumeId = `csi-${path.basename(path.dirname(target))}-${ctx['csi.storage.k8s.io/pod.uid']}`) => ({
  volume_id: volumeId, target_path: target, readonly: true, volume_context: ctx,
  volume_capability: { mount: {}, access_mode: { mode: 'SINGLE_NODE_WRITER' } },
})

async function main(): Promise<void> {
  if (!(await needApiServer('the CSI driver'))) return

  t.test('the CSI node driver over gRPC', async (t) => {
    const k = await startCluster(t)
    await k.core.createNamespace({ body: { metadata: { name: NS } } })
    await k.core.createNode({ body: { metadata: { name: NODE }, status: { allocatable: { cpu: '3800m', memory: '7Gi', pods: '110' } } } })
    const web = await k.core.createNamespacedPod({ namespace: NS, body: podBody('web', { app: 'web' }) })
    const d = await startDriver(t, { kubeconfig: k.kubeconfig, nodeName: NODE })
    const c: Ctx = { k, d }

    await t.test('Identity and node info', async (t) => {
      const info = await d.call('Identity/GetPluginInfo')
      t.equal(info.res?.name, 'csi.dapifs.dev')
      t.match(info.res?.vendor_version, /^\d+\.\d+\.\d+/)
      t.same((await d.call('Identity/GetPluginCapabilities')).res?.capabilities, [], 'no controller service, no topology')
      t.ok(await until(async () => ((await d.call('Identity/Probe')).res?.ready as { value: boolean } | null)?.value === true), 'Probe is ready once the pods are listed')
      t.equal((await d.call('Node/NodeGetInfo')).res?.node_id, NODE, 'node id = the node name')
      t.same((await d.call('Node/NodeGetCapabilities')).res?.capabilities, [{ rpc: { type: 'VOLUME_MOUNT_GROUP' }, type: 'rpc' }],
        'VOLUME_MOUNT_GROUP: the kubelet leaves the fsGroup to the driver')
      for (const m of ['Node/NodeStageVolume', 'Node/NodeUnstageVolume', 'Node/NodeGetVolumeStats', 'Node/NodeExpandVolume']) {
        t.equal((await d.call(m)).code, grpc.status.UNIMPLEMENTED, `${m}: UNIMPLEMENTED`)
      }
      for (const m of ['/csi.v1.Controller/CreateVolume', '/csi.v1.Controller/ControllerPublishVolume', '/csi.v1.GroupController/GroupControllerGetCapabilities']) {
        t.equal((await d.callRaw(m)).code, grpc.status.UNIMPLEMENTED, `${m}: UNIMPLEMENTED`)
      }
      // Kubelets before 1.26 send the socket's path as :authority, which Node's HTTP/2 alone would
      // reset with PROTOCOL_ERROR (lib/csi/authority.ts).
      for (const [Client, sock, method] of [[loadCsi().Identity, d.socket, 'GetPluginInfo'], [loadRegistration(), path.join(d.registrationDir, 'csi.dapifs.dev-reg.sock'), 'GetInfo']] as const) {
        const client = new Client(`unix://${sock}`, grpc.credentials.createInsecure(), { 'grpc.default_authority': sock })
        const res = await new Promise<grpc.ServiceError | null>((resolve) =>
          (client as unknown as Record<string, (r: object, o: object, cb: (e: grpc.ServiceError | null) => void) => void>)[method]!.call(client, {}, { deadline: Date.now() + 5000 }, resolve))
        client.close()
        t.equal(res, null, `${method} with :authority ${sock} (as kubelet 1.20 sends it) answers`)
      }
      const gi = await d.register('GetInfo')
      t.same(gi.res, { type: 'CSIPlugin', name: 'csi.dapifs.dev', endpoint: d.socket, supported_versions: ['1.0.0'] }, 'registration: GetInfo')
      const from = d.lines.length
      t.ok((await d.register('NotifyRegistrationStatus', { plugin_registered: true, error: '' })).ok)
      await d.waitFor(/registered with the kubelet as csi\.dapifs\.dev/, from)
    })

    await t.test('publish: the same bytes as dapifs render, idempotent, then unpublish', async (t) => {
      const target = d.target(web.metadata!.uid!, 'podinfo')
      mkdirSync(path.dirname(target), { recursive: true }) // the kubelet makes the parent; the driver makes mount/
      const req = publishReq(target, context(web))
      const from = d.lines.length
      const r = await d.call('Node/NodePublishVolume', req)
      t.ok(r.ok, r.details ?? "ok")
      t.ok(mounted(target), 'mounted when the call returns')
      const line = await d.waitFor(/published pod shop\/web, volume "podinfo" at /, from)
      t.match(line, /\(\.\.\d{4}_\d\d_\d\d_\d\d_\d\d_\d\d\.\d+, 6 files\)/, 'the log names pod, volume, target and generation')

      // dapifs render, on the same pod and items, is the reference (its bytes are the kubelet's),
      // given the pod as a kubelet keeps it: with config.source and config.seen (kubelet-pod.ts).
      const dir = scratch(t)
      const seen = /^kubernetes\.io\/config\.seen="([^"]+)"$/m.exec(await cat(path.join(target, 'annotations')))?.[1]
      t.match(seen, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d*[1-9])?Z$/, 'config.seen: when the driver first saw the pod, as Go prints it')
      const pod = await k.core.readNamespacedPod({ namespace: NS, name: 'web' })
      pod.metadata!.annotations = { ...pod.metadata!.annotations, 'kubernetes.io/config.seen': seen!, 'kubernetes.io/config.source': 'api' }
      writeFileSync(path.join(dir, 'pod.json'), JSON.stringify(pod))
      writeFileSync(path.join(dir, 'items.yaml'), 'items:\n' + ITEMS.replace(/^/gm, '  '))
      const rendered = await run(process.execPath, ['dist/main.js', 'render', '--pod-file', path.join(dir, 'pod.json'), '--items', path.join(dir, 'items.yaml'), '--node-allocatable', 'cpu=3800m,memory=7Gi'])
      t.equal(rendered.code, 0, rendered.stderr)
      const want = JSON.parse(rendered.stdout.toString()).files as Record<string, { content: string; mode: string }>
      for (const [p, f] of Object.entries(want)) {
        t.equal(await cat(path.join(target, p)), f.content, `${p}: the bytes render gives`)
        const st = await run('stat', ['-L', '-c', '%a', path.join(target, '..data', p)])
        t.equal(st.stdout.toString().trim().padStart(4, '0'), f.mode, `${p}: mode ${f.mode}`)
      }
      t.equal(want.cpu_limit!.content, '3800', 'an unset limit reads the node\'s allocatable')
      const ls = (await run('ls', ['-A', target])).stdout.toString().split('\n').filter(Boolean)
      t.same(ls.filter((n) => !n.startsWith('..')), ['annotations', 'cpu_limit', 'labels', 'mem_request', 'name', 'nested'])
      t.match(await dataTarget(target), /^\.\.\d{4}_/, '..data points at the timestamped directory')

      const gen = await dataTarget(target)
      t.ok((await d.call('Node/NodePublishVolume', req)).ok, 'the same publish again succeeds')
      t.equal(await dataTarget(target), gen, '... and changes nothing')
      t.equal(mountsBelow(d.dir).length, 1, '... and mounts nothing more')
      const other = await d.call('Node/NodePublishVolume', publishReq(target, context(web, { items: '- path: name\n  fieldRef: {fieldPath: metadata.name}' })))
      t.equal(other.code, grpc.status.ALREADY_EXISTS, 'another volume on the same target: ALREADY_EXISTS')

      const u = await d.call('Node/NodeUnpublishVolume', { volume_id: req.volume_id, target_path: target })
      t.ok(u.ok, u.details ?? "ok")
      t.notOk(mounted(target), 'unmounted')
      t.notOk(existsSync(target), 'the target directory is removed')
      t.ok((await d.call('Node/NodeUnpublishVolume', { volume_id: req.volume_id, target_path: target })).ok, 'unpublish again: OK')
      t.ok((await d.call('Node/NodeUnpublishVolume', { volume_id: 'csi-nothing', target_path: d.target('never-was', 'podinfo') })).ok, 'unpublish of a target that never was: OK')
    })

    await t.test('bad items: INVALID_ARGUMENT with the line render gives, nothing mounted', async (t) => {
      const dir = scratch(t)
      const pod = await k.core.readNamespacedPod({ namespace: NS, name: 'web' })
      writeFileSync(path.join(dir, 'pod.json'), JSON.stringify(pod))
      const cases: [string, Record<string, string>, RegExp][] = [
        ['no containerName', { items: '- path: cpu\n  resourceFieldRef: {resource: limits.cpu}' }, /volume "bad", item "cpu": resourceFieldRef\.containerName: is required in a volume/],
        ['an unknown field path', { items: '- path: x\n  fieldRef: {fieldPath: spec.bogus}' }, /volume "bad", item "x": unsupported fieldPath: spec\.bogus /],
        ['a path with ..', { items: '- path: ../x\n  fieldRef: {fieldPath: metadata.name}' }, /item "\.\.\/x": path /],
        ['not a list', { items: 'path: labels' }, /^volumeAttributes\.items: must be a list, not a map$/],
        ['not YAML', { items: '- [' }, /^volumeAttributes\.items: not valid YAML or JSON/],
        ['a bad defaultMode', { items: ITEMS, defaultMode: '0999' }, /defaultMode/],
        ['an unknown attribute', { items: ITEMS, item: 'x' }, /^volumeAttributes: unknown attribute "item" \(allowed: items, defaultMode\)$/],
        ['no items', {}, /^volumeAttributes\.items: is required/],
        ['a container that is not there', { items: '- path: cpu\n  resourceFieldRef: {containerName: nope, resource: limits.cpu}' }, /^pod shop\/web: volume "bad", item "cpu": container nope not found$/],
      ]
      for (const [what, attrs, re] of cases) {
        const target = d.target(pod.metadata!.uid!, 'bad')
        const r = await d.call('Node/NodePublishVolume', publishReq(target, context(pod, attrs)))
        t.equal(r.code, grpc.status.INVALID_ARGUMENT, `${what}: INVALID_ARGUMENT`)
        t.match(r.details, re, `${what}: ${r.details}`)
        t.notOk(r.details?.includes('\n'), 'one line')
        t.notOk(mounted(target), 'nothing mounted')
      }
      // The very line `dapifs render` prints, after its file prefix.
      writeFileSync(path.join(dir, 'items.yaml'), 'items:\n- path: cpu\n  resourceFieldRef: {resource: limits.cpu}\n')
      const rendered = await run(process.execPath, ['dist/main.js', 'render', '--pod-file', path.join(dir, 'pod.json'), '--items', path.join(dir, 'items.yaml')])
      t.equal(rendered.code, 2)
      const r = await d.call('Node/NodePublishVolume', publishReq(d.target(pod.metadata!.uid!, 'bad'), context(pod, { items: '- path: cpu\n  resourceFieldRef: {resource: limits.cpu}' })))
      t.equal(rendered.stderr.trim().split(': ').slice(-2).join(': '), r.details!.split(': ').slice(-2).join(': '), 'the same problem text as render')
      const noInfo = await d.call('Node/NodePublishVolume', { ...publishReq(d.target('x', 'bad'), { items: ITEMS }) })
      t.equal(noInfo.code, grpc.status.INVALID_ARGUMENT)
      t.match(noInfo.details, /podInfoOnMount: true/, 'without pod info: says what the CSIDriver object needs')
    })

    await t.test('the Node\'s kubelet version decides the release; volume_mount_group is applied', async (t) => {
      const kubelet = async (version: string): Promise<void> => {
        await k.core.patchNodeStatus({ name: NODE, body: [{ op: 'add', path: '/status/nodeInfo/kubeletVersion', value: version }] })
      }
      const grouped = await k.core.createNamespacedPod({ namespace: NS, body: podBody('grouped', { app: 'g' }, { securityContext: { fsGroup: 4321 } }) })
      const huge = { items: '- path: huge\n  resourceFieldRef: {containerName: main, resource: limits.hugepages-2Mi}\n' }
      const publishAs = (name: string, attrs: Record<string, string>, mount: Record<string, string> = {}) => {
        const req = publishReq(d.target(grouped.metadata!.uid!, name), context(grouped, attrs))
        mkdirSync(path.dirname(req.target_path), { recursive: true })
        return d.call('Node/NodePublishVolume', { ...req, volume_capability: { ...req.volume_capability, mount } })
      }
      const unpublish = async (name: string): Promise<void> => {
        t.ok((await d.call('Node/NodeUnpublishVolume', { volume_id: 'x', target_path: d.target(grouped.metadata!.uid!, name) })).ok)
      }
      /** `name gid` of each top-level link. */
      const linkGroups = async (target: string): Promise<string[]> => (await run('sh', ['-c', `cd ${JSON.stringify(target)} && for f in ..data *; do [ -L "$f" ] && echo "$f $(stat -c %g "$f")"; done`])).stdout.toString().split('\n').filter(Boolean)

      await kubelet('v1.20.2')
      let r = await publishAs('huge', huge)
      const deadline = Date.now() + 10_000
      while (r.ok && Date.now() < deadline) { // the Node's watch may be behind the patch
        await unpublish('huge')
        await new Promise((resolve) => setTimeout(resolve, 100))
        r = await publishAs('huge', huge)
      }
      t.equal(r.code, grpc.status.INVALID_ARGUMENT, 'a 1.20 node: hugepages refused, as its API server refuses them')
      t.match(r.details, /item "huge": resourceFieldRef\.resource: Unsupported value: "limits\.hugepages-2Mi": supported values: "limits\.cpu", /, r.details ?? "")
      t.ok((await publishAs('old', { items: ITEMS })).ok, 'a 1.20 node: publish')
      t.same(await linkGroups(d.target(grouped.metadata!.uid!, 'old')), ['..data 0', 'annotations 0', 'cpu_limit 0', 'labels 0', 'mem_request 0', 'name 0', 'nested 0'],
        'a 1.20 node: the first write\'s links stay root\'s')
      await unpublish('old')

      await kubelet('v1.19.16')
      await until(async () => (await publishAs('older', { items: ITEMS })).code === grpc.status.FAILED_PRECONDITION)
      r = await publishAs('older', { items: ITEMS })
      t.equal(r.code, grpc.status.FAILED_PRECONDITION, 'a 1.19 node: FAILED_PRECONDITION')
      t.equal(r.details, 'node node-1: kubelet: Kubernetes v1.19.16 is not supported: dapifs renders as the kubelet of 1.20 to 1.37')
      t.notOk(mounted(d.target(grouped.metadata!.uid!, 'older')), 'nothing mounted')

      await kubelet('v1.37.2')
      await until(async () => {
        const ok = (await publishAs('huge', huge)).ok
        if (ok) await unpublish('huge')
        return ok
      })
      r = await publishAs('new', { items: ITEMS }, { volume_mount_group: '4321' })
      t.ok(r.ok, r.details ?? 'a 1.37 node: publish with volume_mount_group')
      const target = d.target(grouped.metadata!.uid!, 'new')
      t.same(await linkGroups(target), ['..data 4321', 'annotations 4321', 'cpu_limit 4321', 'labels 4321', 'mem_request 4321', 'name 4321', 'nested 4321'],
        'a 1.37 node: every link has the fsGroup')
      t.equal((await run('stat', ['-L', '-c', '%a %g', path.join(target, 'name')])).stdout.toString().trim(), '644 4321', 'files: the fsGroup, and 0440 added')
      await unpublish('new')
      r = await publishAs('other', { items: ITEMS }, { volume_mount_group: '1000' })
      t.equal(r.code, grpc.status.INVALID_ARGUMENT)
      t.equal(r.details, 'volume_capability.mount.volume_mount_group: 1000 is not the fsGroup of pod shop/grouped (4321)')
      r = await publishAs('other', { items: ITEMS }, { volume_mount_group: 'wheel' })
      t.equal(r.code, grpc.status.INVALID_ARGUMENT)
      t.equal(r.details, 'volume_capability.mount.volume_mount_group: "wheel" is not a numeric group id from 0 to 4294967294')
      t.notOk(mounted(d.target(grouped.metadata!.uid!, 'other')), 'nothing mounted')
      await k.core.deleteNamespacedPod({ namespace: NS, name: 'grouped', gracePeriodSeconds: 0 })
    })

    await t.test('a pod the API server does not know: waited for, then UNAVAILABLE; a publish before the pods are listed waits', async (t) => {
      const ghost = { metadata: { name: 'ghost', uid: '00000000-0000-0000-0000-000000000001' } }
      const target = d.target(ghost.metadata.uid, 'podinfo')
      const t0 = Date.now()
      const r = await d.call('Node/NodePublishVolume', publishReq(target, context(ghost)), 3000)
      t.equal(r.code, grpc.status.UNAVAILABLE, 'UNAVAILABLE, before the deadline')
      t.match(r.details, /pod shop\/ghost \(uid [-0]+1\) is not on node node-1 in the API server \(yet\); retry/)
      t.ok(Date.now() - t0 >= 1500, 'it waited most of the deadline')
      t.notOk(mounted(target))

      // A driver that starts while the API server is down: its publish waits for the pods' list.
      await k.stopApi()
      const d2 = await startDriver(t, { kubeconfig: k.kubeconfig, nodeName: NODE })
      const lt = d2.target(web.metadata!.uid!, 'podinfo')
      const pub = d2.call('Node/NodePublishVolume', publishReq(lt, context(web)), 60_000)
      await new Promise((r) => setTimeout(r, 500))
      await k.startApi()
      const p = await pub
      t.ok(p.ok, p.details ?? "ok")
      t.equal(await cat(path.join(lt, 'labels')), 'app="web"', 'served once the API server answers')
      t.ok((await d2.call('Node/NodeUnpublishVolume', { volume_id: 'x', target_path: lt })).ok)
      await d2.stop()
    })

    await t.test('a uid that is not the pod\'s is refused', async (t) => {
      const impostor = { metadata: { name: 'web', uid: '00000000-0000-0000-0000-000000000002' } }
      const target = d.target(impostor.metadata.uid, 'podinfo')
      const r = await d.call('Node/NodePublishVolume', publishReq(target, context(impostor)), 10_000)
      t.equal(r.code, grpc.status.FAILED_PRECONDITION)
      t.match(r.details, /pod shop\/web has uid [-0-9a-f]+, not [-0]+2 \(csi\.storage\.k8s\.io\/pod\.uid\): refusing to serve another pod's data/)
      t.notOk(mounted(target))
    })

    await t.test('unpublish while a publish waits for its pod: both end, nothing is left', async (t) => {
      const ghost = { metadata: { name: 'ghost2', uid: '00000000-0000-0000-0000-000000000003' } }
      const target = d.target(ghost.metadata.uid, 'podinfo')
      const pub = d.call('Node/NodePublishVolume', publishReq(target, context(ghost)), 20_000)
      await new Promise((r) => setTimeout(r, 300))
      const u = await d.call('Node/NodeUnpublishVolume', { volume_id: 'x', target_path: target })
      t.ok(u.ok, u.details ?? "ok")
      const p = await pub
      t.equal(p.code, grpc.status.ABORTED, 'the publish is aborted (a code the kubelet retries)')
      t.notOk(mounted(target))
      t.notOk(existsSync(target))
    })

    await t.test('many volumes of one pod, volumes of many pods; a patch flips that pod\'s volumes only', async (t) => {
      const pods = [web]
      for (let i = 0; i < 9; i++) pods.push(await k.core.createNamespacedPod({ namespace: NS, body: podBody(`p${i}`, { app: `p${i}` }) }))
      const targets = new Map<string, string[]>()
      await Promise.all(pods.map(async (pod) => {
        const names = pod === web ? ['a', 'b', 'c'] : ['podinfo']
        const ts = names.map((n) => d.target(pod.metadata!.uid!, n))
        targets.set(pod.metadata!.name!, ts)
        for (const target of ts) {
          const r = await d.call('Node/NodePublishVolume', publishReq(target, context(pod)), 20_000)
          t.ok(r.ok, `${pod.metadata!.name} ${target}: ${r.details ?? 'ok'}`)
        }
      }))
      t.equal(mountsBelow(d.dir).length, 12, '12 mounts')
      for (const [name, ts] of targets) {
        for (const target of ts) t.equal(await cat(path.join(target, 'name')), name, `${target} serves ${name}`)
      }
      const before = new Map<string, string>()
      for (const ts of targets.values()) for (const x of ts) before.set(x, await dataTarget(x))
      await k.core.patchNamespacedPod({ namespace: NS, name: 'web', body: [{ op: 'add', path: '/metadata/labels/rev', value: '1' }] })
      const want = formatLabels({ app: 'web', rev: '1' })
      for (const x of targets.get('web')!) t.ok(await until(async () => (await cat(path.join(x, 'labels'))) === want), `${x}: the new labels`)
      for (const [name, ts] of targets) {
        if (name === 'web') continue
        for (const x of ts) t.equal(await dataTarget(x), before.get(x), `${name}: not flipped`)
      }
      // Unpublish in parallel; nothing is left.
      await Promise.all([...targets.values()].flat().map(async (x) => t.ok((await d.call('Node/NodeUnpublishVolume', { volume_id: 'x', target_path: x })).ok)))
      t.same(mountsBelow(d.dir), [], 'no mount left')
    })

    await t.test('SIGTERM unmounts every volume and exits 0', async (t) => {
      const target = d.target(web.metadata!.uid!, 'last')
      t.ok((await c.d.call('Node/NodePublishVolume', publishReq(target, context(web)))).ok)
      t.equal(await d.stop('SIGTERM'), 0)
      t.same(mountsBelow(d.dir), [], 'no mount left')
      t.notOk(existsSync(d.socket), 'the CSI socket is removed')
      t.notOk(existsSync(path.join(d.registrationDir, 'csi.dapifs.dev-reg.sock')), 'the registration socket is removed')
    })
  })

  t.test('command line', async (t) => {
    const bad: [string[], RegExp][] = [
      [[], /^dapifs: --endpoint: is required/],
      [['--endpoint', 'tcp://1.2.3.4:9'], /^dapifs: --endpoint: "tcp:\/\/1\.2\.3\.4:9" is not a unix socket/],
      [['--endpoint', 'unix:///tmp/x.sock'], /^dapifs: --node-name: is required/],
      [['--endpoint', 'unix:///tmp/x.sock', '--node-name', 'Bad_Name'], /^dapifs: --node-name: "Bad_Name" is not a node name/],
      [['--endpoint', 'unix:///tmp/x.sock', '--node-name', 'n', '--kubeconfig', '/nonexistent'], /^dapifs: --kubeconfig: \/nonexistent: no such file\n$/],
      [['--bogus'], /^dapifs: Unknown option '--bogus'/],
      [['--endpoint', 'unix:///tmp/x.sock', '--node-name', 'n', '--http-endpoint', '9810'], /^dapifs: --http-endpoint: "9810" is not ADDR:PORT /],
      [['--endpoint', 'unix:///tmp/x.sock', '--node-name', 'n', '--log-format', 'yaml'], /^dapifs: --log-format: "yaml" is not a log format \(text or json\)\n$/],
      [['--endpoint', 'unix:///tmp/x.sock', '--node-name', 'n', '--log-format', 'json', '--http-endpoint', ':70000'],
        /^\{"time":"[^"]+","level":"error","message":"--http-endpoint: \\":70000\\" is not ADDR:PORT [^\n]*"\}\n$/],
    ]
    for (const [args, re] of bad) {
      const r = await run(process.execPath, ['dist/main.js', 'csi', ...args])
      t.equal(r.code, 2, args.join(' '))
      t.match(r.stderr, re)
      t.equal(r.stderr.trim().split('\n').length, 1, 'one line')
    }
  })
}

void main()
