package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/strata-fl/strata/internal/seal"
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

// runKeygen prints a new key, or with --out writes it to a file readable
// only by its owner. An existing file is kept, not replaced: data encrypted
// under it would become unreadable, so a one-shot init container can run
// `keygen --out` on every start.
func runKeygen(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("keygen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("out", "", "write the key to this file (mode 0600) instead of stdout; an existing file is kept")
	if err := fs.Parse(args); err != nil {
		return helpOK(fmt.Errorf("%w: %v", errUsage, err))
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: keygen takes no arguments, got %q", errUsage, fs.Args())
	}
	if *out == "" {
		k, err := seal.Generate()
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, k)
		return nil
	}
	msg, err := writeKeyFile(*out)
	if err != nil {
		return fmt.Errorf("keygen: %w", err)
	}
	fmt.Fprintln(stdout, "keygen:", msg)
	return nil
}

// writeKeyFile writes a new key to path (mode 0600) unless path already
// holds one, and says which it did.
func writeKeyFile(path string) (string, error) {
	if _, err := seal.Load(path); err == nil {
		return fmt.Sprintf("%s already holds a key; kept it", path), nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("%s exists but is not a key (%v): move it away or choose another file", path, err)
	}
	k, err := seal.Generate()
	if err != nil {
		return "", err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", err
	}
	if _, err := fmt.Fprintln(f, k); err != nil {
		f.Close()
		return "", fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return "", fmt.Errorf("write %s: %w", path, err)
	}
	return fmt.Sprintf("wrote a new key to %s", path), nil
}
