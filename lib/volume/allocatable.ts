// What a volume reads from the pod's Node. Its allocatable resources: what an unset cpu, memory
// or ephemeral-storage limit reads as; from --node-allocatable, from the Node object in a
// cluster, or, standing in for the node, this machine's cpu count and memory. And, for the
// node.metadata.labels extension, its labels: from the Node object, or from --node-labels.

import os from 'node:os'
import { qualifiedNameErrors } from './fieldpath.js'
import { Quantity, parseQuantity } from './quantity.js'
import type { NodeView } from './pod.js'
import type { Allocatable } from './resource.js'
import { InputError, Shape } from './shape.js'

export const ALLOCATABLE_NAMES = ['cpu', 'memory', 'ephemeral-storage']

/** `cpu=4,memory=16Gi,ephemeral-storage=100Gi`: any subset, each at most once. */
export function parseAllocatableFlag(text: string): Allocatable {
  const out: Allocatable = new Map()
  const fail = (problem: string): never => { throw new InputError('--node-allocatable', problem) }
  for (const part of text.split(',')) {
    const eq = part.indexOf('=')
    if (eq < 0) fail(`${JSON.stringify(part)} is not NAME=QUANTITY (names: ${ALLOCATABLE_NAMES.join(', ')})`)
    const name = part.slice(0, eq).trim()
    if (!ALLOCATABLE_NAMES.includes(name)) fail(`unknown resource ${JSON.stringify(name)} (allowed: ${ALLOCATABLE_NAMES.join(', ')})`)
    if (out.has(name)) fail(`${name} is given twice`)
    try {
      out.set(name, Quantity.parse(part.slice(eq + 1).trim()))
    } catch (e) {
      fail(`${name}: ${(e as Error).message}`)
    }
  }
  return out
}

/** A Node's status.allocatable (quantity strings), keeping the resources a volume can use. */
export function allocatableFromNode(raw: Record<string, unknown> | undefined): Allocatable {
  const out: Allocatable = new Map()
  for (const name of ALLOCATABLE_NAMES) {
    if (raw?.[name] === undefined) continue
    try {
      out.set(name, parseQuantity(raw[name]))
    } catch (e) {
      throw new InputError(`node status.allocatable.${name}`, (e as Error).message)
    }
  }
  return out
}

/** This machine as the node: its cpu count and total memory. */
export function machineAllocatable(): Allocatable {
  return new Map([
    ['cpu', Quantity.parse(String(os.availableParallelism()))],
    ['memory', Quantity.parse(String(os.totalmem()))],
  ])
}

/** A Node object's labels, for the node.metadata.labels extension. */
export function nodeLabels(obj: unknown): Map<string, string> {
  return new Shape(obj, 'node').field('metadata').field('labels').strMap()
}

const LABEL_VALUE_RE = /^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/

/** `--node-labels KEY=VALUE,...` (label values hold no commas): the Node's labels for a pod file. */
export function parseNodeLabelsFlag(text: string): Map<string, string> {
  const labels = new Map<string, string>()
  const fail = (problem: string): never => { throw new InputError('--node-labels', problem) }
  for (const part of text === '' ? [] : text.split(',')) {
    const eq = part.indexOf('=')
    if (eq < 0) fail(`${JSON.stringify(part)} is not KEY=VALUE`)
    const key = part.slice(0, eq)
    const value = part.slice(eq + 1)
    const errs = qualifiedNameErrors(key)
    if (errs.length > 0) fail(`${JSON.stringify(key)} is not a label key: ${errs.join(';')}`)
    if (value.length > 63 || !LABEL_VALUE_RE.test(value)) fail(`${key}: ${JSON.stringify(value)} is not a label value (at most 63 of A-Z, a-z, 0-9, '-', '_' and '.', starting and ending with a letter or digit)`)
    if (labels.has(key)) fail(`${key} is given twice`)
    labels.set(key, value)
  }
  return labels
}

/**
 * What a Node object (or its absence: undefined) tells a volume: its allocatable and its labels,
 * each left out when it cannot be read, with a line for `problem` saying what stands in.
 */
export function nodeViewOf(nodeName: string, obj: unknown, problem: (message: string, e?: unknown) => void): Partial<NodeView> {
  const node: Partial<NodeView> = {}
  if (obj === undefined) {
    problem(`node ${nodeName} not found: unset limits read the fallback allocatable`)
    return node
  }
  try {
    node.allocatable = allocatableFromNode((obj as { status?: { allocatable?: Record<string, unknown> } }).status?.allocatable)
  } catch (e) {
    problem(`${(e as Error).message} (unset limits read the fallback allocatable)`, e)
  }
  try {
    node.labels = nodeLabels(obj)
  } catch (e) {
    problem(`${(e as Error).message} (the node's labels read empty)`, e)
  }
  return node
}
