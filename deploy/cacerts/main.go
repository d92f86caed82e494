// Command cacerts writes the Mozilla (NSS) root certificates of
// golang.org/x/crypto/x509roots as a PEM bundle: the one source of the CA
// certificates of orderflow's images, whichever Dockerfile stage builds
// them. Roots that NSS trusts only with constraints PEM cannot express
// (a distrust-after date) are left out.
package main

import (
	"encoding/pem"
	"fmt"
	"os"

	"golang.org/x/crypto/x509roots/fallback/bundle"
)

func main() {
	n := 0
	for r := range bundle.Roots() {
		if r.Constraint != nil {
			continue
		}
		if err := pem.Encode(os.Stdout, &pem.Block{Type: "CERTIFICATE", Bytes: r.Certificate}); err != nil {
			fmt.Fprintln(os.Stderr, "cacerts:", err)
			os.Exit(1)
		}
		n++
	}
	if n == 0 {
		fmt.Fprintln(os.Stderr, "cacerts: no roots")
		os.Exit(1)
	}
}
