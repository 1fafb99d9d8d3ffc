// Compares Cells version strings with hashicorp/go-version (what Cells uses; Debian's
// golang-github-hashicorp-go-version-dev). Reads "A<TAB>B" lines, prints -1, 0 or 1 per
// line, or ERR when go-version cannot parse one of them.
package main

import (
	"bufio"
	"fmt"
	"os"
	"strings"

	version "github.com/hashicorp/go-version"
)

func main() {
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 1<<20)
	out := bufio.NewWriter(os.Stdout)
	defer out.Flush()
	for in.Scan() {
		pair := strings.SplitN(in.Text(), "\t", 2)
		if len(pair) != 2 {
			fmt.Fprintln(out, "ERR")
			continue
		}
		a, errA := version.NewVersion(pair[0])
		b, errB := version.NewVersion(pair[1])
		if errA != nil || errB != nil {
			fmt.Fprintln(out, "ERR")
			continue
		}
		fmt.Fprintln(out, a.Compare(b))
	}
}
