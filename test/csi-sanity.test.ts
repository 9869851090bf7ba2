// Conformance: csi-sanity, the Kubernetes CSI project's own suite (scripts/go-tool.sh csi-sanity builds it
// at a pinned version), against `dapifs csi` with a real kube-apiserver behind it. Every Identity
// and Node test that applies to a node-only driver of ephemeral volumes passes; what is skipped,
// and why (docs/observability.md):
//   - `[Controller Server]`: every Controller service test. dapifs has no Controller service
//     (no CONTROLLER_SERVICE capability): its volumes are CSI ephemeral inline volumes, which
//     the kubelet publishes on the node with no CreateVolume, no attach, no claim. These tests
//     call ControllerGetCapabilities in their BeforeEach and fail on its UNIMPLEMENTED.
//   - `should remove target path`: it makes its volume with CreateVolume (the Controller
//     service) before it publishes one. What it checks, that NodeUnpublishVolume removes the
//     target, is tested with the kubelet's targets (csi.test.ts, kube-node-csi.test.ts).
//   - skipped by csi-sanity itself, for capabilities dapifs does not claim: staging
//     (STAGE_UNSTAGE_VOLUME), stats, expansion, volume health, single-node multi-writer, and
//     the tests that need a Controller service to make a volume ("should work").
// Its publishes all carry target paths under --csi.mountdir, which the driver refuses whatever
// else they hold (a target must be where the kubelet puts a pod's CSI volumes); so beside the
// suite's verdict, the test checks that each of its refusals names the field it is about.
import t from 'tap'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import * as grpc from '@grpc/grpc-js'
import { run } from './fixtures/daemon.js'
import { startDriver } from './fixtures/csi.js'
import { needApiServer, startCluster } from './fixtures/kube.js'

const NODE = 'node-1'
const SKIP = '\\[Controller Server\\]|should remove target path'

/** The tests that must pass: the suite's Identity and Node tests for a node-only driver. */
const PASS = [
  'Identity Service GetPluginCapabilities should return appropriate capabilities',
  'Identity Service Probe should return appropriate information',
  'Identity Service GetPluginInfo should return appropriate information',
  'Node Service NodeGetCapabilities should return appropriate capabilities',
  'Node Service NodeGetInfo should return appropriate values',
  'Node Service NodePublishVolume should fail when no volume id is provided',
  'Node Service NodePublishVolume should fail when no target path is provided',
  'Node Service NodePublishVolume should fail when no volume capability is provided',
  'Node Service NodeUnpublishVolume should fail when no volume id is provided',
  'Node Service NodeUnpublishVolume should fail when no target path is provided',
]

interface Case { name: string; status: string; skipped?: string }

const unxml = (s: string): string => s.replace(/&#(\d+);/g, (_, n: string) => String.fromCharCode(Number(n)))
  .replace(/&quot;/g, '"').replace(/&apos;/g, '\'').replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&amp;/g, '&')

/** The JUnit report's test cases: name (without ginkgo's "[It] "), status, and a skip's message. */
function cases(xml: string): Case[] {
  return xml.split('<testcase ').slice(1).map((c) => {
    const attr = (name: string, from = c): string | undefined => {
      const m = new RegExp(`\\b${name}="([^"]*)"`).exec(from)
      return m ? unxml(m[1]!) : undefined
    }
    const skipped = /<skipped ([^>]*)>/.exec(c)
    return { name: attr('name')!.replace(/^\[It\] /, ''), status: attr('status')!, ...(skipped ? { skipped: attr('message', skipped[1]) ?? '' } : {}) }
  })
}

async function main(): Promise<void> {
  if (!(await needApiServer('csi-sanity'))) return
  const built = await run('bash', ['scripts/go-tool.sh', 'csi-sanity', 'built'])
  const sanity = built.stdout.toString().trim()
  if (built.code !== 0) {
    if (process.env.CI) t.fail('csi-sanity is not built in CI (.ci/run builds it: scripts/go-tool.sh csi-sanity build)')
    else t.test('csi-sanity', { skip: 'csi-sanity is not built: scripts/go-tool.sh csi-sanity build' }, async () => {})
    return
  }

  t.test('csi-sanity: every Identity and Node test for a node-only ephemeral driver passes', async (t) => {
    const k = await startCluster(t)
    await k.core.createNode({ body: { metadata: { name: NODE } } })
    const d = await startDriver(t, { kubeconfig: k.kubeconfig, nodeName: NODE, args: ['--no-keeper'] })
    const dir = mkdtempSync(path.join(os.tmpdir(), 'dapifs-sanity-'))
    t.teardown(() => rmSync(dir, { recursive: true, force: true }))
    const report = path.join(dir, 'junit.xml')
    const r = await run(sanity, [
      `--csi.endpoint=unix://${d.socket}`, `--csi.mountdir=${path.join(dir, 'mount')}`, `--csi.stagingdir=${path.join(dir, 'staging')}`,
      `--ginkgo.skip=${SKIP}`, `--ginkgo.junit-report=${report}`, '--ginkgo.no-color',
    ], { timeoutMs: 120_000 })
    const out = r.stdout.toString()
    t.equal(r.code, 0, `csi-sanity exits 0: ${out.split('\n').filter((l) => /Passed|FAIL/.test(l)).join(' ')}`)
    const all = cases(readFileSync(report, 'utf8'))
    t.ok(all.length >= 100, `the report has the suite's ${all.length} tests`)
    t.same(all.filter((c) => c.status === 'failed' || c.status === 'panicked' || c.status === 'interrupted').map((c) => c.name), [], 'none failed')
    t.same(all.filter((c) => c.status === 'passed').map((c) => c.name).sort(), [...PASS].sort(), 'the Identity and Node tests that apply pass')
    const filtered = all.filter((c) => c.status === 'skipped' && c.skipped === 'skipped')
    t.same(filtered.filter((c) => !new RegExp(SKIP).test(c.name)).map((c) => c.name), [], 'skipped by us: only the Controller service and the test that needs it')
    t.ok(filtered.some((c) => c.name === 'Node Service NodeUnpublishVolume should remove target path'))
    const itself = all.filter((c) => c.status === 'skipped' && c.skipped !== 'skipped')
    for (const c of itself) t.match(c.skipped, /^skipped - .*(not supported|not provided|does not have|CreateVolume)/i, `skipped by the suite: ${c.name}: ${c.skipped}`)
    t.ok(itself.some((c) => /NodeStageVolume/.test(c.name)), 'staging: skipped by the suite (no STAGE_UNSTAGE_VOLUME)')
    t.comment(`${all.filter((c) => c.status === 'passed').length} passed, ${filtered.length} skipped by us, ${itself.length} by the suite, ${all.filter((c) => c.status === 'pending').length} pending`)

    // The same calls as the suite's, answered for the reason the suite means.
    const target = d.target('0f5c0000-0000-0000-0000-000000000001', 'podinfo')
    const capability = { mount: {}, access_mode: { mode: 'SINGLE_NODE_WRITER' } }
    const refusals: [string, object, string][] = [
      ['NodePublishVolume', {}, 'volume_id: is required'],
      ['NodePublishVolume', { volume_id: 'v' }, 'target_path: is required'],
      ['NodePublishVolume', { volume_id: 'v', target_path: target }, 'volume_capability: is required'],
      ['NodePublishVolume', { volume_id: 'v', target_path: target, volume_capability: { block: {}, access_mode: capability.access_mode } }, 'volume_capability: dapifs volumes are filesystems, not block devices'],
      ['NodeUnpublishVolume', {}, 'volume_id: is required'],
      ['NodeUnpublishVolume', { volume_id: 'v' }, 'target_path: is required'],
    ]
    for (const [method, req, details] of refusals) {
      const a = await d.call(`Node/${method}`, req)
      t.equal(a.code, grpc.status.INVALID_ARGUMENT, `${method} ${JSON.stringify(req).slice(0, 60)}: INVALID_ARGUMENT`)
      t.equal(a.details, details)
    }
    const elsewhere = await d.call('Node/NodePublishVolume', { volume_id: 'v', target_path: path.join(dir, 'mount', 'target'), volume_capability: capability })
    t.equal(elsewhere.code, grpc.status.INVALID_ARGUMENT, 'the suite\'s own target: refused, it is not where the kubelet puts a pod\'s volumes')
    t.match(elsewhere.details, /is not where the kubelet puts a pod's CSI volumes/)
  })
}

void main()
