// printable: prints the code points at or above U+0080 that this Go's strconv.IsPrint accepts
// (what fmt's %q leaves as they are), as ranges, one `first last` pair in hex a line, after a
// first line with the Go version and its Unicode version. gen.sh runs it with the Go of each
// kubelet dapifs renders as, and writes lib/volume/printable.ts from the output.
package main

import (
	"bufio"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"unicode"
)

func main() {
	w := bufio.NewWriter(os.Stdout)
	defer w.Flush()
	fmt.Fprintf(w, "%s %s\n", runtime.Version(), unicode.Version)
	start := -1
	for r := 0x80; r <= unicode.MaxRune+1; r++ {
		in := r <= unicode.MaxRune && strconv.IsPrint(rune(r))
		if in && start < 0 {
			start = r
		} else if !in && start >= 0 {
			fmt.Fprintf(w, "%x %x\n", start, r-1)
			start = -1
		}
	}
}
