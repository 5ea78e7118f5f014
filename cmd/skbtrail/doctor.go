package main

import (
	"context"
	"io"
)

func runDoctor(ctx context.Context, args []string, stdout io.Writer) error {
	return usageErr("doctor: not implemented yet")
}
