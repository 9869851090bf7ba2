// The state directory's records, read back as a restarted agent reads them (state.ts): a record
// whose bytes are not what it names, in size or in content, in a blob or in the record itself, is
// refused with its reason, never served with other bytes.
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import t, { type Test } from 'tap'
import { createHash } from 'node:crypto'
import { INLINE_BYTES, VolumeStore, type VolumeRecord } from '../lib/csi/state.js'
import { Generations } from '../lib/volume/generation.js'

const target = '/var/lib/kubelet/pods/u1/volumes/kubernetes.io~csi/podinfo/mount'
// labels is larger than a record keeps inline: its bytes are a blob.
const files = [
  { path: 'labels', mode: 0o644, data: Buffer.from(`app="web"\nnote="${'x'.repeat(INLINE_BYTES)}"`) },
  { path: 'meta/name', mode: 0o644, data: Buffer.from('web') },
  { path: 'same', mode: 0o644, data: Buffer.from(`app="web"\nnote="${'x'.repeat(INLINE_BYTES)}"`) },
]
const record: VolumeRecord = {
  volumeId: 'v1', target, volumeContext: { items: '- {path: labels, fieldRef: {fieldPath: metadata.labels}}' }, seen: 'then', kubelet: '1.37',
  generation: new Generations().create({ files }),
}
const hex = (b: Buffer): string => createHash('sha256').update(b).digest('hex')

/**
 * A saved record, the blob of labels changed by `change` (or the record file, by `changeRecord`),
 * loaded again: the records, and what was said.
 */
async function loadAfter(t: Test, change?: (blob: string) => void, changeRecord?: (file: string) => void): Promise<{ records: VolumeRecord[]; bad: string[] }> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'dapifs-state-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  await new VolumeStore(dir).save(record)
  t.same(readdirSync(dir).filter((n) => n.endsWith('.json')).map((n) => n.slice(32)).sort(), ['.0.json', '.1.json'], 'one record, in its first slot, and a copy in the other')
  const key = readdirSync(dir).find((n) => !n.endsWith('.json'))!
  rmSync(path.join(dir, `${key}.1.json`)) // the copy: each test changes the one record
  t.same(readdirSync(path.join(dir, key)), [hex(files[0]!.data)], 'one blob: the large file\'s bytes, once for the two files that have them')
  change?.(path.join(dir, key, hex(files[0]!.data)))
  changeRecord?.(path.join(dir, `${key}.0.json`))
  const bad: string[] = []
  const records = await new VolumeStore(dir).load((_, why) => bad.push(why))
  return { records, bad }
}

t.test('a record and its bytes read back as saved', async (t) => {
  const { records, bad } = await loadAfter(t)
  t.same(bad, [])
  t.equal(records.length, 1)
  const r = records[0]!
  t.equal(r.generation.name, record.generation.name)
  t.same(r.generation.projection.files.map((f) => [f.path, f.mode, f.data.toString()]), files.map((f) => [f.path, f.mode, f.data.toString()]))
  t.same([r.volumeId, r.target, r.volumeContext, r.seen, r.kubelet], [record.volumeId, record.target, record.volumeContext, record.seen, record.kubelet])
})

t.test('bytes of the right size but not the ones named are refused', async (t) => {
  const { records, bad } = await loadAfter(t, (blob) => writeFileSync(blob, Buffer.alloc(files[0]!.data.length, 'e')))
  t.same(records, [])
  t.match(bad, [/file "labels": its bytes do not match its hash/])
})

t.test('longer or shorter bytes are refused', async (t) => {
  for (const data of [`${files[0]!.data.toString()} and more`, 'app']) {
    const { records, bad } = await loadAfter(t, (blob) => writeFileSync(blob, data))
    t.same(records, [], data)
    t.match(bad, [/file "labels": its bytes do not match its size/], data)
  }
})

t.test('missing bytes are refused', async (t) => {
  const { records, bad } = await loadAfter(t, (blob) => rmSync(blob))
  t.same(records, [])
  t.match(bad, [/file "labels": its bytes are missing \(ENOENT\)/])
})

t.test('a small file\'s bytes, kept in the record, are checked as a blob\'s are', async (t) => {
  /** The record with meta/name's inline bytes (base64 of "web") replaced by `b64`. */
  const tamper = (b64: string) => (file: string): void => {
    const o = JSON.parse(readFileSync(file, 'utf8')) as { generation: { files: { path: string; data?: string }[] } }
    const f = o.generation.files.find((x) => x.path === 'meta/name')!
    t.equal(Buffer.from(f.data!, 'base64').toString(), 'web', 'its bytes are in the record')
    f.data = b64
    writeFileSync(file, JSON.stringify(o))
  }
  const same = await loadAfter(t, undefined, tamper(Buffer.from('web').toString('base64')))
  t.same(same.bad, [])
  t.equal(same.records[0]!.generation.projection.files[1]!.data.toString(), 'web')
  const other = await loadAfter(t, undefined, tamper(Buffer.from('bad').toString('base64')))
  t.same(other.records, [])
  t.match(other.bad, [/file "meta\/name": its bytes do not match its hash/])
  const longer = await loadAfter(t, undefined, tamper(Buffer.from('webs').toString('base64')))
  t.match(longer.bad, [/file "meta\/name": its bytes do not match its size/])
})

t.test('a record of version 2 (one file, every file\'s bytes in a blob) is read, as an upgrade finds it; its first save moves it', async (t) => {
  let legacy = ''
  const { records, bad } = await loadAfter(t, undefined, (file) => {
    const o = JSON.parse(readFileSync(file, 'utf8')) as { version: number; seq?: number; generation: { files: { sha256: string; data?: string }[] } }
    o.version = 2
    delete o.seq
    for (const f of o.generation.files) {
      if (f.data !== undefined) writeFileSync(path.join(file.slice(0, -'.0.json'.length), f.sha256), Buffer.from(f.data, 'base64'))
      delete f.data
    }
    legacy = file.replace(/\.0\.json$/, '.json')
    writeFileSync(legacy, JSON.stringify(o))
    rmSync(file)
  })
  t.same(bad, [])
  t.same(records[0]!.generation.projection.files.map((f) => [f.path, f.data.toString()]), files.map((f) => [f.path, f.data.toString()]))
  const store = new VolumeStore(path.dirname(legacy))
  await store.load(() => {})
  await store.save(record)
  t.notOk(existsSync(legacy), 'the record of version 2 is gone')
  t.ok(existsSync(legacy.replace(/\.json$/, '.0.json')), 'the record is in its first slot')
})

t.test('saves take the two slots in turn; a slot torn by a kill leaves the record before it', async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'dapifs-state-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const gens = new Generations()
  const at = (labels: string): VolumeRecord => ({ ...record, generation: gens.create({ files: [{ path: 'labels', mode: 0o644, data: Buffer.from(labels) }] }) })
  const store = new VolumeStore(dir)
  const first = at('app="one"')
  const second = at('app="two"')
  const third = at('app="three"')
  for (const r of [first, second, third]) await store.save(r)
  const slots = readdirSync(dir).filter((n) => n.endsWith('.json')).sort()
  t.same(slots.map((n) => n.slice(32)), ['.0.json', '.1.json'])
  const load = async (): Promise<{ names: string[]; bad: string[] }> => {
    const bad: string[] = []
    const names = (await new VolumeStore(dir).load((_, why) => bad.push(why))).map((r) => r.generation.name)
    return { names, bad }
  }
  t.same(await load(), { names: [third.generation.name], bad: [] }, 'the newest: the third, in slot 0')
  // Killed in the middle of the fourth save's one write: slot 1, which held the second, is torn.
  const fourth = at('app="four"')
  const text = readFileSync(path.join(dir, slots[0]!), 'utf8')
  writeFileSync(path.join(dir, slots[1]!), text.replace(third.generation.name, fourth.generation.name).replace('"seq":3', '"seq":4').slice(0, 100))
  t.same(await load(), { names: [third.generation.name], bad: [] }, 'the one before it is read, and nothing is said of the torn one')
  truncateSync(path.join(dir, slots[0]!), 10)
  const both = await load()
  t.same(both.names, [], 'both torn: nothing to serve')
  t.equal(both.bad.length, 2, 'and both said')
})
