// The worker thread of parser.ts: parses each text it is sent, and sends back the value, or the
// one-line problem (an InputError's where and problem: errors do not cross threads as themselves).
import { parentPort } from 'node:worker_threads'
import { InputError } from '../volume/shape.js'
import { parseAttribute } from './attributes.js'

parentPort!.on('message', ({ id, text, where }: { id: number; text: string; where: string }) => {
  try {
    parentPort!.postMessage({ id, value: parseAttribute(text, where) })
  } catch (e) {
    const err = e instanceof InputError ? { where: e.where, problem: e.problem } : { where, problem: `cannot be parsed: ${(e as Error).message}` }
    parentPort!.postMessage({ id, ...err })
  }
})
