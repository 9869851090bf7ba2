// Item paths: cleaned as the kubelet cleans them, and checked by both rules a path meets on its
// way to disk: API validation (on the path as written) and the atomic writer (on the cleaned
// path, with its length limits). A path either passes both or fails with one reason.

/** Go's path/filepath.Clean on a Unix path. */
export function cleanPath(p: string): string {
  if (p === '') return '.'
  const rooted = p.startsWith('/')
  const out: string[] = []
  for (const el of p.split('/')) {
    if (el === '' || el === '.') continue
    if (el === '..') {
      if (out.length > 0 && out[out.length - 1] !== '..') out.pop()
      else if (!rooted) out.push('..')
      continue
    }
    out.push(el)
  }
  const body = out.join('/')
  if (rooted) return '/' + body
  return body === '' ? '.' : body
}

export const MAX_PATH_BYTES = 4096
export const MAX_NAME_BYTES = 255

/** Why the item path is refused, or undefined when it is fine. */
export function pathProblem(raw: string): string | undefined {
  // API validation (ValidateLocalNonReservedPath), on the path as written.
  if (raw === '') return 'must not be empty'
  if (raw.startsWith('/')) return 'must be a relative path'
  if (raw.split('/').includes('..')) return "must not contain '..'"
  if (raw.startsWith('..')) return "must not start with '..'"
  // The atomic writer (validatePath), on the cleaned path.
  const clean = cleanPath(raw)
  if (clean === '.') return 'must name a file, not the volume directory itself'
  if (Buffer.byteLength(clean) > MAX_PATH_BYTES) return `must be at most ${MAX_PATH_BYTES} bytes long`
  const parts = clean.split('/')
  if (parts.some((el) => Buffer.byteLength(el) > MAX_NAME_BYTES)) {
    return `each path element must be at most ${MAX_NAME_BYTES} bytes long`
  }
  if (parts[0]!.startsWith('..')) return "must not start with '..'"
  if (clean.includes('\0')) return 'must not contain a NUL byte'
  return undefined
}
