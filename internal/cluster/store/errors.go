package store

import (
	"errors"
	"fmt"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
)

// Sentinel errors. Test with errors.Is.
var (
	// ErrNotFound: the key does not exist.
	ErrNotFound = errors.New("store: not found")
	// ErrConflict: a compare-and-swap found another revision than expected;
	// nothing was written. Re-read and decide again.
	ErrConflict = errors.New("store: revision conflict")
	// ErrNotLeader: a guarded controller write found that the leader key it
	// names is gone or was re-created; nothing was written. The caller is no
	// longer the leader and must stop acting as one.
	ErrNotLeader = errors.New("store: not the leader (leader key changed), write refused")
	// ErrOwned: the VM has an owner, so the operation (delete) is refused.
	ErrOwned = errors.New("store: vm has an owner")
	// ErrLeaseNotFound: the lease named for a lease-bound key does not exist
	// (it expired or was revoked); nothing was written.
	ErrLeaseNotFound = errors.New("store: lease not found (expired or revoked)")
	// ErrOutcomeUnknown: the write was sent but no answer came (deadline,
	// lost connection): it may or may not have landed. For owner changes,
	// use Resolve (or re-issue the same operation) before acting.
	ErrOutcomeUnknown = errors.New("store: write outcome unknown")
	// ErrSchema: a stored value was written by an incompatible version.
	ErrSchema = errors.New("store: incompatible value")
)

// ConflictError carries the revision found by a failed compare-and-swap.
type ConflictError struct {
	Key       string
	ExpectRev int64 // what the caller expected (0 = absent)
	ActualRev int64 // ModRevision found (0 = absent)
}

func (e *ConflictError) Error() string {
	return fmt.Sprintf("store: %s: expected revision %d, found %d", e.Key, e.ExpectRev, e.ActualRev)
}

// Is makes errors.Is(err, ErrConflict) true.
func (e *ConflictError) Is(target error) bool { return target == ErrConflict }

// OutcomeUnknownError is returned (wrapped) when an owner change was sent but
// its answer was lost. Change is what was attempted: pass it to Resolve.
type OutcomeUnknownError struct {
	Change OwnerChange
	Err    error // the transport error
}

func (e *OutcomeUnknownError) Error() string {
	return fmt.Sprintf("store: %s vm %s (expected owner revision %d): outcome unknown: %v", e.Change.Kind, e.Change.VM, e.Change.ExpectRev, e.Err)
}

// Is makes errors.Is(err, ErrOutcomeUnknown) true.
func (e *OutcomeUnknownError) Is(target error) bool { return target == ErrOutcomeUnknown }

// Unwrap returns the transport error.
func (e *OutcomeUnknownError) Unwrap() error { return e.Err }

// writeError classifies an error returned by a write Txn. Errors that etcd
// returns after deciding not to apply the request are definite; everything
// else (deadline, cancel, unavailable) leaves the outcome unknown.
func writeError(what string, err error) error {
	switch {
	case errors.Is(err, rpctypes.ErrLeaseNotFound):
		return fmt.Errorf("%s: %w", what, ErrLeaseNotFound)
	case definite(err):
		return fmt.Errorf("%s: %w", what, err)
	}
	return fmt.Errorf("%s: %w: %w", what, ErrOutcomeUnknown, err)
}

// definite reports errors that etcd returns before proposing a request.
func definite(err error) bool {
	for _, e := range []error{
		rpctypes.ErrEmptyKey, rpctypes.ErrTooManyOps, rpctypes.ErrDuplicateKey,
		rpctypes.ErrRequestTooLarge, rpctypes.ErrNoSpace, rpctypes.ErrPermissionDenied,
		rpctypes.ErrInvalidAuthToken, rpctypes.ErrAuthNotEnabled, rpctypes.ErrUserEmpty,
	} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// isUnknownOutcome is true for errors that leave a write's outcome unknown.
func isUnknownOutcome(err error) bool {
	if err == nil || errors.Is(err, rpctypes.ErrLeaseNotFound) || definite(err) {
		return false
	}
	return true
}
