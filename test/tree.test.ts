// The directory model's retention: which generations stay resolvable, and when one is dropped.
import t from 'tap'
import { Generations } from '../lib/volume/generation.js'
import { Tree } from '../lib/fs/tree.js'

const gens = new Generations()
const gen = (v: string) => gens.create({ files: [{ path: 'labels', data: Buffer.from(`v="${v}"`), mode: 0o644 }] })

t.test('a replaced generation resolves until it is dropped, and dropping is reported once', async (t) => {
  const dropped: string[] = []
  const tree = new Tree({ retainMax: 2, retainMs: 200, dropped: (name) => dropped.push(name) })
  const [a, b, c, d] = ['a', 'b', 'c', 'd'].map(gen) as [ReturnType<typeof gen>, ReturnType<typeof gen>, ReturnType<typeof gen>, ReturnType<typeof gen>]
  tree.flip(a)
  tree.flip(b)
  tree.flip(c)
  t.same(dropped, [], 'two replaced generations are retained')
  t.equal(tree.lookup(`/${a.name}/labels`)?.kind, 'file', 'and resolve')
  tree.flip(d)
  t.same(dropped, [b.name], 'a third drops the least recently used (a was just read)')
  t.equal(tree.lookup(`/${b.name}/labels`), undefined, 'which no longer resolves')
  t.equal(tree.lookup(`/${d.name}/labels`)?.kind, 'file')
  await new Promise((r) => setTimeout(r, 300))
  t.same(dropped.sort(), [a.name, b.name, c.name].sort(), 'the rest go after retainMs')
  t.notOk(dropped.includes(d.name), 'never the current one')
  t.equal(tree.lookup(`/${d.name}/labels`)?.kind, 'file')
})

t.test('a generation staged and replaced before it was committed is dropped', async (t) => {
  const dropped: string[] = []
  const tree = new Tree({ dropped: (name) => dropped.push(name) })
  const [a, b] = [gen('a'), gen('b')]
  tree.stage(a)
  tree.flip(b)
  t.same(dropped, [a.name])
  t.equal(tree.lookup(`/${a.name}`), undefined)
})

t.test('flipping to the current generation again drops nothing', async (t) => {
  const dropped: string[] = []
  const tree = new Tree({ retainMax: 1, retainMs: 50, dropped: (name) => dropped.push(name) })
  const a = gen('a')
  tree.flip(a)
  tree.flip(a)
  await new Promise((r) => setTimeout(r, 100))
  t.same(dropped, [])
  t.equal(tree.lookup(`/${a.name}/labels`)?.kind, 'file')
})
