// Budgets (lib/volume/budget.ts): what one volume may ask for, refused before it is built; and
// what a volume and a node keep of past generations (lib/fs/kept.ts, tree.ts).
import t from 'tap'
import { spawnSync } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import path from 'node:path'
import { AGENT_BUDGET_KEYS, DEFAULT_AGENT_BUDGET, DEFAULT_VOLUME_BUDGET, VOLUME_BUDGET_KEYS, parseBudgetFlag } from '../lib/volume/budget.js'
import { readVolumeContext } from '../lib/csi/attributes.js'
import { KeptBytes } from '../lib/fs/kept.js'
import { Tree } from '../lib/fs/tree.js'
import { Generations, checkGeneration, type Generation } from '../lib/volume/generation.js'
import { readPod, pickVolume } from '../lib/volume/pod.js'
import { project } from '../lib/volume/projection.js'
import { Quantity } from '../lib/volume/quantity.js'
import { MAIN, scratch } from './fixtures/daemon.js'

const ALLOC = new Map([['cpu', Quantity.parse('4')], ['memory', Quantity.parse('8Gi')]])
const KiB = 1024

function podWith(items: unknown[], annotations: Record<string, string> = {}): ReturnType<typeof readPod> {
  return readPod({
    apiVersion: 'v1', kind: 'Pod',
    metadata: { name: 'p', namespace: 'ns', uid: 'u-1', labels: { a: '1' }, annotations },
    spec: { containers: [{ name: 'c' }], volumes: [{ name: 'v', downwardAPI: { items } }] },
  })
}

const annotationsItems = (n: number): unknown[] => Array.from({ length: n }, (_, i) => ({ path: `a${i}`, fieldRef: { fieldPath: 'metadata.annotations' } }))
const BIG = { big: 'x'.repeat(250 * KiB) } // within the API server's 256 KiB for all annotations

t.test('a volume over a budget is refused with the budget and the figure', async (t) => {
  const over = podWith(annotationsItems(1001))
  t.throws(() => project(over, pickVolume(over), { node: { allocatable: ALLOC, labels: new Map() } }),
    { message: 'volume "v": has 1,001 items, over the budget of 1,000 items (--budget items=...)' })
  const bytes = podWith(annotationsItems(9), BIG)
  t.throws(() => project(bytes, pickVolume(bytes), { node: { allocatable: ALLOC, labels: new Map() } }),
    { message: 'volume "v": renders 2,304,054 bytes, over the budget of 2 MiB (--budget volume=...)' })
  const file = podWith(annotationsItems(1), BIG)
  t.throws(() => project(file, pickVolume(file), { node: { allocatable: ALLOC, labels: new Map() }, budget: { ...DEFAULT_VOLUME_BUDGET, file: 100 * KiB } }),
    { message: 'volume "v", item "a0": renders 256,006 bytes, over the budget of 100 KiB (--budget file=...)' })
  const fits = podWith(annotationsItems(8), BIG)
  t.equal(project(fits, pickVolume(fits), { node: { allocatable: ALLOC, labels: new Map() } }).files.length, 8, 'eight copies of the largest annotations fit')
})

t.test('each distinct item is rendered once, and its files share their bytes', async (t) => {
  const pod = podWith([...annotationsItems(8), { path: 'l', fieldRef: { fieldPath: 'metadata.labels' } }], BIG)
  const files = project(pod, pickVolume(pod), { node: { allocatable: ALLOC, labels: new Map() } }).files
  const shared = new Set(files.filter((f) => f.path.startsWith('a')).map((f) => f.data))
  t.equal(shared.size, 1, 'one buffer for the eight annotations files')
  t.equal(files.find((f) => f.path === 'l')!.data.toString(), 'a="1"')
})

t.test('a CSI volume\'s items: their text is measured before it is parsed, and YAML anchors are refused', async (t) => {
  const ctx = (items: string): Record<string, string> => ({
    items, 'csi.storage.k8s.io/pod.name': 'p', 'csi.storage.k8s.io/pod.namespace': 'ns', 'csi.storage.k8s.io/pod.uid': 'u-1',
  })
  const one = '- {path: labels, fieldRef: {fieldPath: metadata.labels}}\n'
  t.equal(readVolumeContext(ctx(one), 'v').volume.items.length, 1)
  t.throws(() => readVolumeContext(ctx(one.repeat(1300)), 'v'),
    { message: `volumeAttributes.items: is ${(one.length * 1300).toLocaleString('en-US')} bytes, over the budget of 64 KiB (--budget items-text=...)` })
  // 3,000 aliases of one item in a few lines: the parse stops at the anchor.
  const aliases = `- &a {path: a, fieldRef: {fieldPath: metadata.annotations}}\n${'- *a\n'.repeat(3000)}`
  t.throws(() => readVolumeContext(ctx(aliases), 'v'),
    { message: 'volumeAttributes.items: YAML anchors and aliases (&a, *a) are not allowed here: write each item out' })
  const nested = 'x: &p {fieldPath: metadata.name}\n'
  t.throws(() => readVolumeContext(ctx(`- {path: n, fieldRef: ${nested}}`), 'v'), /volumeAttributes\.items: /)
  t.throws(() => readVolumeContext(ctx('- {path: n, fieldRef: &r {fieldPath: metadata.name}}\n- {path: m, fieldRef: *r}'), 'v'),
    { message: 'volumeAttributes.items: YAML anchors and aliases (&r, *r) are not allowed here: write each item out' })
})

t.test('--budget: names, values and errors', async (t) => {
  t.same(parseBudgetFlag('items=10,volume=4Mi,items-text=1Ki', VOLUME_BUDGET_KEYS, DEFAULT_VOLUME_BUDGET), { ...DEFAULT_VOLUME_BUDGET, items: 10, volume: 4 * 1024 * KiB, itemsText: KiB })
  t.same(parseBudgetFlag('pod-volumes=2,kept-for=10,node-kept=1Mi', AGENT_BUDGET_KEYS, DEFAULT_AGENT_BUDGET), { ...DEFAULT_AGENT_BUDGET, podVolumes: 2, keptFor: 10, nodeKept: 1024 * KiB })
  for (const [text, message] of [
    ['items', '--budget: "items" is not NAME=VALUE (names: items, items-text, file, volume)'],
    ['pods=1', '--budget: unknown budget "pods" (allowed: items, items-text, file, volume)'],
    ['items=0', '--budget: items: "0" is not a whole number of items above 0'],
    ['file=lots', '--budget: file: "lots" is not a whole number of bytes above 0 (a quantity: 65536, 64Ki, 2Mi)'],
    ['items=1,items=2', '--budget: items is given twice'],
  ]) t.throws(() => parseBudgetFlag(text!, VOLUME_BUDGET_KEYS, DEFAULT_VOLUME_BUDGET), { message }, text)
})

t.test('the command line: a refusal is one line and exit 2, before anything large is built', async (t) => {
  const dir = scratch(t)
  const pod = path.join(dir, 'pod.json')
  writeFileSync(pod, JSON.stringify({ apiVersion: 'v1', kind: 'Pod', metadata: { name: 'p', namespace: 'ns', uid: 'u', annotations: BIG }, spec: { containers: [{ name: 'c' }] } }))
  const items = (name: string, n: number): string => {
    const f = path.join(dir, name)
    writeFileSync(f, JSON.stringify({ items: annotationsItems(n) }))
    return f
  }
  // The case that took 2.6 GB and 30 s of CPU before budgets: 2,000 items of 250 KiB each. Its
  // peak memory is read from the kernel (ru_maxrss of the child), not timed.
  const measured = (args: string[]): { code: number; stderr: string; maxrssKB: number } => {
    const py = 'import json,resource,subprocess,sys\n' +
      'r = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n' +
      'print(json.dumps({"code": r.returncode, "stderr": r.stderr, "maxrssKB": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))'
    const r = spawnSync('python3', ['-c', py, process.execPath, MAIN, ...args], { encoding: 'utf8' })
    return JSON.parse(r.stdout) as { code: number; stderr: string; maxrssKB: number }
  }
  for (const [n, line] of [
    [2000, `dapifs: ${path.join(dir, 'items-2000.json')}: volume "--items": has 2,000 items, over the budget of 1,000 items (--budget items=...)\n`],
    [1000, `dapifs: ${pod}: volume "--items": renders 256,006,000 bytes, over the budget of 2 MiB (--budget volume=...)\n`],
  ] as const) {
    const r = measured(['render', '--pod-file', pod, '--items', items(`items-${n}.json`, n)])
    t.equal(r.code, 2, `${n} items: exit 2`)
    t.equal(r.stderr, line)
    t.ok(r.maxrssKB < 200 * 1024, `${n} items: peak memory ${Math.round(r.maxrssKB / 1024)} MB, well under what rendering it would take`)
  }
  const ok = spawnSync(process.execPath, [MAIN, 'render', '--pod-file', pod, '--items', items('items-8.json', 8)], { encoding: 'utf8', maxBuffer: 64 << 20 })
  t.equal(ok.status, 0, ok.stderr)
  t.equal(Object.keys(JSON.parse(ok.stdout).files).length, 8, 'a large output is printed whole through a pipe (2 MB)')
  const raised = spawnSync(process.execPath, [MAIN, 'render', '--pod-file', pod, '--items', items('items-9.json', 9), '--budget', 'volume=3Mi'], { encoding: 'utf8', maxBuffer: 64 << 20 })
  t.equal(raised.status, 0, `--budget raises it: ${raised.stderr}`)
  const bad = spawnSync(process.execPath, [MAIN, 'render', '--pod-file', pod, '--items', items('items-1.json', 1), '--budget', 'volume=big'], { encoding: 'utf8' })
  t.equal(bad.status, 2)
  t.equal(bad.stderr, 'dapifs: --budget: volume: "big" is not a whole number of bytes above 0 (a quantity: 65536, 64Ki, 2Mi)\n')
})

const gens = new Generations()
const gen = (bytes: number, tag = ''): Generation => gens.create({ files: [{ path: 'labels', data: Buffer.alloc(bytes, tag || 'x'), mode: 0o644 }] })

t.test('a volume keeps at most its budget of past generations, the oldest going first', async (t) => {
  const dropped: string[] = []
  const tree = new Tree({ keptBytes: 250, dropped: (n) => dropped.push(n) })
  const g = [gen(100), gen(100), gen(100), gen(100), gen(100)]
  for (const x of g) tree.flip(x)
  t.equal(tree.kept(), 200, 'two past generations of 100 bytes fit in 250')
  t.ok(tree.lookup(`/${g[3]!.name}/labels`), 'the newest past one resolves')
  t.ok(tree.lookup(`/${g[2]!.name}/labels`), 'and the one before')
  t.notOk(tree.file(`/${g[1]!.name}/labels`), 'older ones are not kept at all')
  t.same(dropped.sort(), [g[0]!.name, g[1]!.name].sort(), 'and were reported dropped')
  tree.close()
})

t.test('a past generation\'s bytes stay readable for keptMs, then go', async (t) => {
  const tree = new Tree({ retainMs: 50, keptMs: 200 })
  const [a, b] = [gen(10, 'a'), gen(10, 'b')]
  tree.flip(a)
  tree.flip(b)
  await new Promise((r) => setTimeout(r, 100))
  t.notOk(tree.lookup(`/${a.name}/labels`), 'no longer resolvable after retainMs')
  t.equal(tree.file(`/${a.name}/labels`)?.toString(), 'a'.repeat(10), 'its bytes still readable by path')
  await new Promise((r) => setTimeout(r, 250))
  t.notOk(tree.file(`/${a.name}/labels`), 'gone after keptMs')
  t.equal(tree.kept(), 0)
  tree.close()
})

t.test('the node\'s budget sheds from the volume that keeps the most, not from the others', async (t) => {
  const node = new KeptBytes(1000)
  const quiet = new Tree({ node, keptBytes: 10_000 })
  const churn = new Tree({ node, keptBytes: 10_000 })
  quiet.flip(gen(300))
  quiet.flip(gen(300))
  const quietPast = quiet.kept()
  t.equal(quietPast, 300)
  for (let i = 0; i < 20; i++) churn.flip(gen(200))
  t.ok(node.total <= 1000, `the node keeps at most its budget: ${node.total}`)
  t.equal(quiet.kept(), quietPast, 'the quiet volume keeps its past generation')
  t.equal(churn.kept(), 600, 'the churning one keeps what is left')
  t.equal(node.total, quiet.kept() + churn.kept(), 'the node\'s total is what its volumes keep')
  churn.close()
  t.equal(node.total, 300, 'a closed volume leaves the node\'s budget')
  quiet.close()
  t.equal(node.total, 0, 'and so does the last')
})

t.test('a generation read back from a record is checked as a rendering is', async (t) => {
  const good = gens.create({ files: [{ path: 'a/b', data: Buffer.from('x'), mode: 0o644 }, { path: 'labels', data: Buffer.from('y'), mode: 0o640 }], gid: 4 })
  checkGeneration(good, DEFAULT_VOLUME_BUDGET)
  const bad = (what: string, g: Partial<Generation> & { files?: Generation['projection']['files']; gid?: number }, message: RegExp): void => {
    const gen = { ...good, ...g, projection: { files: g.files ?? good.projection.files, ...(g.gid !== undefined ? { gid: g.gid } : {}) } }
    t.throws(() => checkGeneration(gen, DEFAULT_VOLUME_BUDGET), message, what)
  }
  const file = (path: string, mode = 0o644, data = Buffer.from('x')) => ({ path, mode, data })
  bad('a name that is not a generation\'s', { name: '../etc' }, /is not a generation's name/)
  bad('a path that climbs', { files: [file('../x')] }, /file "\.\.\/x": path must not contain '\.\.'/)
  bad('an absolute path', { files: [file('/etc/passwd')] }, /path must be a relative path/)
  bad('an unclean path', { files: [file('a//b')] }, /is not a clean path/)
  bad('a path twice', { files: [file('a'), file('a')] }, /is there twice/)
  bad('a file below a file', { files: [file('a'), file('a/b')] }, /is below another file/)
  bad('a mode with setuid', { files: [file('a', 0o4755)] }, /mode 2541 is not a file mode/)
  bad('a group out of range', { gid: -1 }, /group -1 is not a group id/)
  bad('a file over budget', { files: [file('a', 0o644, Buffer.alloc(2 * 1024 * KiB))] }, /over the budget of 1 MiB/)
})
