// Package exitcode holds the exit statuses of the contract, which
// `skbtrail trace` and `kubectl skbtrail trace` share, and the error that
// carries one up to main.
package exitcode

import (
	"errors"
	"fmt"
)

// Exit statuses of the contract.
const (
	OK       = 0
	Problem  = 1 // a journey was dropped, rejected or lost, or an error finding
	Usage    = 2 // usage or environment error
	NoPacket = 3 // no matching packet before the timeout
)

// Error carries an exit status; a nil Err prints nothing.
type Error struct {
	Code int
	Err  error
}

func (e *Error) Error() string {
	if e.Err == nil {
		return ""
	}
	return e.Err.Error()
}

func (e *Error) Unwrap() error { return e.Err }

// Usagef is a usage or environment error (status 2) with a one-line message.
func Usagef(format string, args ...any) error {
	return &Error{Code: Usage, Err: fmt.Errorf(format, args...)}
}

// Of is the exit status for err: OK for nil, the carried one, else Usage.
func Of(err error) int {
	var e *Error
	switch {
	case err == nil:
		return OK
	case errors.As(err, &e):
		return e.Code
	}
	return Usage
}
