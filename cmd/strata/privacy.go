package main

import (
	"context"
	"errors"
	"io"
)

// runPrivacy is replaced by the privacy engine's planning command.
func runPrivacy(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return errors.New("privacy: not built yet")
}
