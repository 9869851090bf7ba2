// One log line, whatever it holds. Lines name pods, volumes, items and paths that pod authors
// chose (an item path may hold a newline); each is quoted where it is written, and this is the
// last guard: a control character anywhere in a line is written as an escape, so that no value
// can end a line early and forge the next one.
//
// A line is a message for people, plus what a machine needs to file it: its level, and, on the
// lines about one volume (publish, unpublish, flip, a problem with an update), that volume's pod,
// name and target. The text format (the default) writes the message alone, as it always has: it
// already names them. The JSON format (`dapifs csi --log-format json`) writes one object a line:
//
//   {"time":"2026-12-06T22:21:16.542Z","level":"info","message":"published pod shop/web, ...",
//    "pod":{"namespace":"shop","name":"web","uid":"0f5c…"},"volume":"podinfo","target":"/var/lib/…"}
//
// JSON.stringify escapes every control character; the three line separators it leaves as they
// are (U+0085, U+2028, U+2029), which some readers split lines on, are escaped here too.

import { InputError } from './volume/shape.js'

/** A command's end in error, as one line and its exit code: bad input (InputError) 2, a bug 1. */
export function failure(e: unknown): { line: string; code: 1 | 2 } {
  return e instanceof InputError ? { line: e.message.replace(/\n/g, ' '), code: 2 } : { line: `internal error: ${(e as Error).message}`, code: 1 }
}

// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u001f\u007f\u0085\u2028\u2029]/g

export function oneLine(text: string): string {
  return text.replace(CONTROL, (c) => {
    switch (c) {
      case '\n': return '\\n'
      case '\r': return '\\r'
      case '\t': return '\\t'
      default: return `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`
    }
  })
}

export type Level = 'info' | 'warning' | 'error'

/** What a line is about, for the JSON format; the text format's message says it already. */
export interface LineFields {
  /** info unless said. */
  level?: Level
  pod?: { namespace: string; name: string; uid: string }
  volume?: string
  target?: string
}

/** Writes one line for the operator. */
export type Say = (line: string, fields?: LineFields) => void

export type LogFormat = 'text' | 'json'
export const LOG_FORMATS: readonly LogFormat[] = ['text', 'json']

const SEPARATORS = /[\u0085\u2028\u2029]/g

/** One JSON object, on one line (no newline at its end). */
export function jsonLine(message: string, fields: LineFields = {}, time: Date = new Date()): string {
  const { level = 'info', pod, volume, target } = fields
  const obj: Record<string, unknown> = { time: time.toISOString(), level, message }
  if (pod) obj.pod = { namespace: pod.namespace, name: pod.name, uid: pod.uid }
  if (volume !== undefined) obj.volume = volume
  if (target !== undefined) obj.target = target
  return JSON.stringify(obj).replace(SEPARATORS, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`)
}

/**
 * A Say that writes to stderr in `format`; text lines start with `prefix`. The lines of one turn of
 * the event loop go out in one write, at its end (or at the process's exit): a change of the Node
 * says a line for each of a thousand volumes, and stderr is a pipe, written synchronously, a system
 * call a line. A SIGKILL loses the lines of the turn it ends.
 */
export function stderrSay(format: LogFormat, prefix: string): Say {
  const text = format === 'json' ? (line: string, fields?: LineFields): string => `${jsonLine(line, fields)}\n` : (line: string): string => `${prefix}${oneLine(line)}\n`
  let pending = ''
  const flush = (): void => {
    const out = pending
    pending = ''
    if (out) process.stderr.write(out)
  }
  process.on('exit', flush)
  const add = (s: string): void => {
    if (pending === '') setImmediate(flush)
    pending += s
  }
  return (line, fields) => add(text(line, fields))
}
