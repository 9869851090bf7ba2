// Budgets: how much one volume may ask for. One node agent renders every pod's volumes on the
// one thread that also answers every mount's FUSE requests, so what a pod author writes (the
// items of their volume, their own labels and annotations) must not cost the other pods: a
// volume over a budget is refused before anything large is built, with a line that names the
// budget and the figure. The kubelet needs none of this, since a kubelet's volume costs only
// its own pod; these are sized so that every real downward API volume fits many times over:
//
//   items          items per volume                  1,000   (real volumes: a handful to ~50)
//   items-text     bytes of a CSI volume's `items`   64 KiB  (parsing it is the slowest step)
//   file           bytes per file                    1 MiB   (annotations are at most 256 KiB,
//                                                             and %q escaping at most ~4x that)
//   volume         bytes per volume                  2 MiB
//
// The node agent (`dapifs csi`) adds budgets for a pod's volumes together, and for what it keeps
// of past generations (fs/kept.ts), per volume and for the node:
//
//   pod-volumes    dapifs volumes per pod            16      (each is a mount of its own)
//   pod            bytes per pod, all its volumes    4 MiB
//   kept           bytes of past generations kept    4 MiB   per volume (resolvable for 5 s after a
//                                                             flip, then readable for files held
//                                                             open)
//   node-kept      the same, for all volumes         64 MiB
//   kept-for       how long a past generation stays  300 s
//
// So the agent's memory for the volumes of a node stays under (its pods) x pod + node-kept, on
// top of its own (about 100 MB). `--budget KEY=VALUE,...` changes any of them.

import { Quantity } from './quantity.js'
import { InputError } from './shape.js'

export interface VolumeBudget {
  /** Items per volume, as written (duplicates and all). */
  items: number
  /** Bytes of a CSI volume's `items` attribute, before it is parsed. */
  itemsText: number
  /** Bytes per file. */
  file: number
  /** Bytes per volume: all its files together. */
  volume: number
}

const KiB = 1024
const MiB = 1024 * KiB

export const DEFAULT_VOLUME_BUDGET: VolumeBudget = { items: 1000, itemsText: 64 * KiB, file: MiB, volume: 2 * MiB }

export interface AgentBudget extends VolumeBudget {
  /** dapifs volumes per pod on the node. */
  podVolumes: number
  /** Bytes per pod: all its dapifs volumes on the node together. */
  pod: number
  /** Bytes of past generations kept per volume. */
  kept: number
  /** Bytes of past generations kept for all the node's volumes together. */
  nodeKept: number
  /** Seconds a past generation's bytes stay readable by path. */
  keptFor: number
}

export const DEFAULT_AGENT_BUDGET: AgentBudget = {
  ...DEFAULT_VOLUME_BUDGET, podVolumes: 16, pod: 4 * MiB, kept: 4 * MiB, nodeKept: 64 * MiB, keptFor: 300,
}

/** A budget's name on the command line, and what it counts. */
export interface BudgetKey<B> { key: string; field: keyof B; unit: 'items' | 'bytes' | 'volumes' | 'seconds' }

export const VOLUME_BUDGET_KEYS: BudgetKey<VolumeBudget>[] = [
  { key: 'items', field: 'items', unit: 'items' },
  { key: 'items-text', field: 'itemsText', unit: 'bytes' },
  { key: 'file', field: 'file', unit: 'bytes' },
  { key: 'volume', field: 'volume', unit: 'bytes' },
]

export const AGENT_BUDGET_KEYS: BudgetKey<AgentBudget>[] = [
  ...VOLUME_BUDGET_KEYS,
  { key: 'pod-volumes', field: 'podVolumes', unit: 'volumes' },
  { key: 'pod', field: 'pod', unit: 'bytes' },
  { key: 'kept', field: 'kept', unit: 'bytes' },
  { key: 'node-kept', field: 'nodeKept', unit: 'bytes' },
  { key: 'kept-for', field: 'keptFor', unit: 'seconds' },
]

/** A figure as people read it: 2 MiB, 1,000 items. */
export function figure(n: number, unit: BudgetKey<unknown>['unit']): string {
  if (unit === 'bytes') {
    for (const [size, name] of [[MiB, 'MiB'], [KiB, 'KiB']] as const) if (n >= size && n % size === 0) return `${n / size} ${name}`
    return `${n.toLocaleString('en-US')} bytes`
  }
  return `${n.toLocaleString('en-US')} ${unit}`
}

/**
 * The refusal: what is over which budget, by how much, and how to change it. `budgetCause` names
 * it without the figure, so that a pod that keeps growing past a budget is reported once.
 */
export class BudgetError extends InputError {
  constructor(where: string, problem: string, readonly budgetCause: string) {
    super(where, problem)
  }
}

export function overBudget(where: string, what: string, n: number, limit: number, key: string, unit: BudgetKey<unknown>['unit']): BudgetError {
  return new BudgetError(where, `${what} ${figure(n, unit)}, over the budget of ${figure(limit, unit)} (--budget ${key}=...)`, `${where}: over ${key}`)
}

/** What makes two reports of a problem the same: a budget's cause, or else the message. */
export function causeOf(e: Error): string {
  return e instanceof BudgetError ? e.budgetCause : e.message
}

/**
 * `--budget items=2000,volume=4Mi,...`: the budgets named, each a positive whole number (a
 * quantity for bytes: 64Ki, 2Mi), over the defaults. `keys` are those this command has.
 */
export function parseBudgetFlag<B extends object>(text: string, keys: BudgetKey<B>[], defaults: B): B {
  const out = { ...defaults }
  const fail = (problem: string): never => { throw new InputError('--budget', problem) }
  const names = keys.map((k) => k.key).join(', ')
  const given = new Set<string>()
  for (const part of text.split(',')) {
    const eq = part.indexOf('=')
    if (eq < 0) fail(`${JSON.stringify(part)} is not NAME=VALUE (names: ${names})`)
    const name = part.slice(0, eq).trim()
    const k = keys.find((x) => x.key === name)
    if (!k) fail(`unknown budget ${JSON.stringify(name)} (allowed: ${names})`)
    if (given.has(name)) fail(`${name} is given twice`)
    given.add(name)
    const raw = part.slice(eq + 1).trim()
    let n = NaN
    try {
      n = k!.unit === 'bytes' ? Number(Quantity.parse(raw).value()) : /^[0-9]+$/.test(raw) ? Number(raw) : NaN
    } catch { /* refused below */ }
    if (!Number.isSafeInteger(n) || n < 1) {
      fail(`${name}: ${JSON.stringify(raw)} is not a whole number of ${k!.unit} above 0${k!.unit === 'bytes' ? ' (a quantity: 65536, 64Ki, 2Mi)' : ''}`)
    }
    ;(out as Record<string, unknown>)[k!.field as string] = n
  }
  return out
}
