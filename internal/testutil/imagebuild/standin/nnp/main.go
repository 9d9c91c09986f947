// Command nnp stands in for the program of the nonewprivs test image
// (registry.k8s.io/e2e-test-images/nonewprivs): installed setuid root, it
// prints its effective UID. With no_new_privs set, exec ignores the setuid
// bit and the caller's UID is printed instead of 0.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Printf("Effective uid: %d\n", os.Geteuid())
}
