// The kubelet release dapifs renders as. A downward API volume is the same idea on every
// release, but what the kubelet does with it moved, and a byte-exact claim is a claim about one
// kubelet. What differs between the supported releases, and from which release on:
//
//   printable   fmt's %q escapes code points its Go's Unicode tables do not know (printable.ts).
//               Kubernetes up to 1.28 was built with Go 1.20 or older (Unicode 13: 1.20.2 here is
//               Debian's build, with Go 1.19); from 1.29, with Go 1.21 or newer (Unicode 15.0).
//   hugepages   `resourceFieldRef.resource: limits.hugepages-<size>` in a volume: the API server
//               refuses it until 1.21 (the DownwardAPIHugePages gate, off), accepts it from 1.22.
//   links       the atomic writer's order. Up to 1.22 the new top-level links are made before
//               `..data_tmp` (pointing into the old `..data` for an instant); from 1.23 after the
//               rename (kubernetes/kubernetes#97642). So is what inotify sees.
//   linkGroup   the fsGroup of the links. SetVolumeOwnership skips symlinks up to 1.20, so the
//               links of the first write stay root's, and only links made later, in the by-then
//               setgid volume root, take the fsGroup from it; from 1.21 it Lchowns them
//               (kubernetes/kubernetes#94895), and every link has the fsGroup.
//   linkChown   when that Lchown of every link happens at a write, which inotify sees as an ATTRIB
//               per link (only with an fsGroup): from 1.21 to 1.26 after the write (the volume
//               plugin's SetVolumeOwnership, once the atomic writer is done); from 1.27 inside the
//               writer, after the files and before `..data_tmp` (kubernetes/kubernetes#114464).
//
// Tested end to end: 1.20.2 and 1.37.2 (docs/exactness.md). The releases between follow the
// upstream changes named above. Older or newer releases are refused: nothing says how they write.

import { PRINTABLE, type PrintableTable } from './printable.js'
import { InputError } from './shape.js'

export interface KubeletRelease {
  /** "1.37": the minor release (patches within a minor do not change a volume). */
  readonly name: string
  readonly minor: number
  /** The Go whose Unicode tables its %q follows. */
  readonly go: keyof typeof PRINTABLE
  readonly printable: PrintableTable
  /** Whether its API server accepts hugepages in a volume's resourceFieldRef. */
  readonly hugePagesInVolumes: boolean
  /** Whether the atomic writer makes new top-level links after the rename of ..data (else before ..data_tmp). */
  readonly linksAfterRename: boolean
  /** Whether every link has the fsGroup (else only links made after the first write). */
  readonly linksTakeFsGroup: boolean
  /** When, with an fsGroup, every link is Lchowned at a write: never, after the write, or before ..data_tmp. */
  readonly linkChown: 'never' | 'after-write' | 'before-rename'
}

export const OLDEST_MINOR = 20
export const NEWEST_MINOR = 37
export const SUPPORTED = `1.${OLDEST_MINOR} to 1.${NEWEST_MINOR}`

const cache = new Map<number, KubeletRelease>()

/** The release of a minor version in the supported range. */
export function releaseOf(minor: number): KubeletRelease {
  let r = cache.get(minor)
  if (r) return r
  if (!Number.isInteger(minor) || minor < OLDEST_MINOR || minor > NEWEST_MINOR) throw new RangeError(`1.${minor} is not supported`)
  const go = minor <= 28 ? 'go1.19' : 'go1.26'
  r = Object.freeze({
    name: `1.${minor}`, minor, go, printable: PRINTABLE[go],
    hugePagesInVolumes: minor >= 22,
    linksAfterRename: minor >= 23,
    linksTakeFsGroup: minor >= 21,
    linkChown: minor >= 27 ? 'before-rename' : minor >= 21 ? 'after-write' : 'never',
  })
  cache.set(minor, r)
  return r
}

export const NEWEST = releaseOf(NEWEST_MINOR)

/**
 * A release named as a person or a Node names it: `1.37`, `1.37.2`, `v1.37.2`, with a build
 * suffix allowed (`v1.37.2-eks-1a2b`, `v1.30.0+k3s1`). Throws InputError naming `where`.
 */
export function parseRelease(text: string, where: string): KubeletRelease {
  const m = /^v?1\.(\d{1,3})(\.\d{1,4})?([-+][0-9A-Za-z.+-]*)?$/.exec(text.trim())
  if (!m) throw new InputError(where, `${JSON.stringify(text)} is not a Kubernetes release: give one like 1.${NEWEST_MINOR} or v1.${NEWEST_MINOR}.2 (supported: ${SUPPORTED})`)
  const minor = Number(m[1])
  if (minor < OLDEST_MINOR || minor > NEWEST_MINOR) {
    throw new InputError(where, `Kubernetes ${text.trim()} is not supported: dapifs renders as the kubelet of ${SUPPORTED}` +
      (minor > NEWEST_MINOR ? ', and does not guess what a newer one writes' : ''))
  }
  return releaseOf(minor)
}
