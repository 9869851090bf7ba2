// One log line, whatever it holds. Lines name pods, volumes, items and paths that pod authors
// chose (an item path may hold a newline); each is quoted where it is written, and this is the
// last guard: a control character anywhere in a line is written as an escape, so that no value
// can end a line early and forge the next one.

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
