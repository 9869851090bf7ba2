// Checks on untrusted JSON (a pod file, an items file, an API object), each failing with a
// one-line message that names the field: `spec.volumes[0].downwardAPI.items: must be a list`.

/** A problem with the input, named by where it is. The CLI prints it and exits 2. */
export class InputError extends Error {
  constructor(readonly where: string, readonly problem: string) {
    super(where ? `${where}: ${problem}` : problem)
  }
}

export function describe(v: unknown): string {
  if (v === null) return 'null'
  if (Array.isArray(v)) return 'a list'
  if (typeof v === 'object') return 'a map'
  if (typeof v === 'string') return `the string ${JSON.stringify(v)}`
  return `${typeof v} ${String(v)}`
}

export type Json = unknown
export type Obj = Record<string, Json>

function join(where: string, key: string | number): string {
  if (typeof key === 'number') return `${where}[${key}]`
  if (!/^[A-Za-z_][A-Za-z0-9_-]*$/.test(key)) return `${where}[${JSON.stringify(key)}]`
  return where ? `${where}.${key}` : key
}

export function isObj(v: Json): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
}

export class Shape {
  constructor(readonly value: Json, readonly where: string) {}

  fail(problem: string): never {
    throw new InputError(this.where, problem)
  }

  get present(): boolean {
    return this.value !== undefined && this.value !== null
  }

  /** A field of this object (absent fields are undefined; a non-object here is an error). */
  field(key: string): Shape {
    return new Shape(this.obj()[key], join(this.where, key))
  }

  obj(): Obj {
    if (!this.present) return {}
    if (!isObj(this.value)) this.fail(`must be a map, not ${describe(this.value)}`)
    return this.value
  }

  list(): Shape[] {
    if (!this.present) return []
    if (!Array.isArray(this.value)) this.fail(`must be a list, not ${describe(this.value)}`)
    return this.value.map((v, i) => new Shape(v, join(this.where, i)))
  }

  str(fallback = ''): string {
    if (!this.present) return fallback
    if (typeof this.value !== 'string') this.fail(`must be a string, not ${describe(this.value)}`)
    return this.value
  }

  int(): number | undefined {
    if (!this.present) return undefined
    if (typeof this.value !== 'number' || !Number.isSafeInteger(this.value)) {
      this.fail(`must be an integer, not ${describe(this.value)}`)
    }
    return this.value
  }

  bool(): boolean | undefined {
    if (!this.present) return undefined
    if (typeof this.value !== 'boolean') this.fail(`must be true or false, not ${describe(this.value)}`)
    return this.value
  }

  /** A map of string to string (labels, annotations). */
  strMap(): Map<string, string> {
    const out = new Map<string, string>()
    for (const [k, v] of Object.entries(this.obj())) out.set(k, new Shape(v, join(this.where, k)).str())
    return out
  }
}
