package main

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/strata-fl/strata/seal"
)

// dataKey is the encryption-at-rest key for commands that open a data dir:
// the file named by STRATA_KEY_FILE, else STRATA_KEY (hex or base64), else
// none. Roles that write data take --key-file, which wins.
func dataKey() (*seal.Key, error) { return seal.Load(os.Getenv("STRATA_KEY_FILE")) }

// roleKey loads the key for a role process: --key-file if given, else as
// dataKey.
func roleKey(path string) (*seal.Key, error) {
	if path != "" {
		return seal.Load(path)
	}
	return dataKey()
}

func runKeygen(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		return fmt.Errorf("%w: keygen takes no arguments", errUsage)
	}
	k, err := seal.Generate()
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, k)
	return nil
}
