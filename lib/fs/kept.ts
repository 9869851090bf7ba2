// What the agent keeps of past generations, for all of its volumes together.
//
// A replaced generation stays resolvable for a few seconds (readers that resolved `..data` just
// before a flip), then its bytes stay readable for a while longer for files held open whose pages
// the kernel let go (tree.ts). Both cost memory that the pod, by changing often and big, decides.
// Each volume keeps at most its own budget (tree.ts sheds its oldest first); this class holds
// the node's budget over all of them: when the total is over it, the volume that keeps the most
// sheds its oldest, and again, until the total fits. So a pod that churns loses its own past
// generations first, and never makes another volume lose its own within that volume's fair share.

/** One volume's past generations, as the node's budget sees them. */
export interface KeptHolder {
  /** Bytes kept now. */
  kept(): number
  /** Lets go of the oldest generation kept; false when there is none. */
  shed(): boolean
}

export class KeptBytes {
  private readonly holders = new Set<KeptHolder>()
  /** Bytes kept by every holder together, as they report them (changed()). */
  private sum = 0

  constructor(readonly budget: number) {}

  add(h: KeptHolder): () => void {
    this.holders.add(h)
    return () => { this.holders.delete(h) }
  }

  /**
   * A holder now keeps `delta` bytes more (or fewer). Each reports its own changes, so that the
   * total is known without asking a thousand volumes at every flip.
   */
  changed(delta: number): void {
    this.sum += delta
  }

  get total(): number {
    return this.sum
  }

  /** After a holder kept more: sheds from the largest until the node's total fits. */
  enforce(): void {
    while (this.sum > this.budget) {
      let largest: KeptHolder | undefined
      let most = 0
      for (const h of this.holders) {
        const k = h.kept()
        if (k > most) { most = k; largest = h }
      }
      if (!largest || !largest.shed()) return
    }
  }
}
