package coord

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// Reasons: the values of the coord-error trailer (docs/protocol.md, section 3).
const (
	ReasonInvalidArgument    = "invalid_argument"
	ReasonNotFound           = "not_found"
	ReasonAlreadyExists      = "already_exists"
	ReasonFailedPrecondition = "failed_precondition"
	ReasonNotLeader          = "not_leader"
	ReasonStaleToken         = "stale_token"
	ReasonUnavailable        = "unavailable"
	ReasonNoLeader           = "no_leader"
	ReasonOutcomeUnknown     = "outcome_unknown"
	ReasonDeadlineExceeded   = "deadline_exceeded"
	ReasonResourceExhausted  = "resource_exhausted"
	ReasonUnauthenticated    = "unauthenticated"
	ReasonPermissionDenied   = "permission_denied"
	ReasonOutOfRange         = "out_of_range"
	ReasonInternal           = "internal"
)

var retryableReasons = map[string]bool{
	ReasonNotLeader: true, ReasonUnavailable: true, ReasonNoLeader: true,
	ReasonOutcomeUnknown: true, ReasonDeadlineExceeded: true,
}

// reasonByCode is used when a status carries no coord-error trailer (the transport's own
// failures: a refused connection, an attempt's deadline).
var reasonByCode = map[codes.Code]string{
	codes.InvalidArgument:    ReasonInvalidArgument,
	codes.NotFound:           ReasonNotFound,
	codes.AlreadyExists:      ReasonAlreadyExists,
	codes.FailedPrecondition: ReasonFailedPrecondition,
	codes.Unavailable:        ReasonUnavailable,
	codes.Canceled:           ReasonUnavailable,
	codes.DeadlineExceeded:   ReasonDeadlineExceeded,
	codes.ResourceExhausted:  ReasonResourceExhausted,
	codes.Unauthenticated:    ReasonUnauthenticated,
	codes.PermissionDenied:   ReasonPermissionDenied,
	codes.OutOfRange:         ReasonOutOfRange,
	codes.Internal:           ReasonInternal,
}

// Error is what the cluster answered: a gRPC code, coord's reason and, when the answering
// node knew it, where the leader is. Compare reasons with errors.Is(err, coord.ErrNotFound)
// and friends, or read Reason.
type Error struct {
	Code          codes.Code
	Reason        string // coord-error trailer, else derived from Code; "" if unknown
	Message       string
	LeaderAddress string // coord-leader: the leader's client API address
	LeaderID      string // coord-leader-id
	Endpoint      string // the endpoint that answered (or failed)
}

func (e *Error) Error() string {
	if e.Reason == "" {
		return fmt.Sprintf("coord: %s (%s)", e.Message, e.Code)
	}
	return fmt.Sprintf("coord: %s (%s)", e.Message, e.Reason)
}

// Retryable reports whether another attempt may succeed (docs/protocol.md, section 3).
func (e *Error) Retryable() bool { return retryableReasons[e.Reason] }

// Is matches sentinel errors by reason: errors.Is(err, coord.ErrNotFound).
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Code == 0 && t.Message == "" && t.Reason == e.Reason
}

// Sentinels for errors.Is.
var (
	ErrInvalidArgument    = &Error{Reason: ReasonInvalidArgument}
	ErrNotFound           = &Error{Reason: ReasonNotFound}
	ErrAlreadyExists      = &Error{Reason: ReasonAlreadyExists}
	ErrFailedPrecondition = &Error{Reason: ReasonFailedPrecondition}
	ErrNotLeader          = &Error{Reason: ReasonNotLeader}
	ErrStaleToken         = &Error{Reason: ReasonStaleToken}
	ErrUnavailable        = &Error{Reason: ReasonUnavailable}
	ErrNoLeader           = &Error{Reason: ReasonNoLeader}
	ErrOutcomeUnknown     = &Error{Reason: ReasonOutcomeUnknown}
	ErrOutOfRange         = &Error{Reason: ReasonOutOfRange}
)

// ErrSessionEnded is returned for work on a session that is lost or closed.
var ErrSessionEnded = errors.New("coord: the session is lost or closed: open a new session")

// translate builds an *Error from a gRPC failure and its trailing metadata (the client's
// one translation point). A context error of the caller's own is returned as it is.
func translate(err error, trailer metadata.MD, endpoint string) error {
	if err == nil {
		return nil
	}
	var ce *Error
	if errors.As(err, &ce) {
		return err
	}
	st, ok := status.FromError(err)
	if !ok {
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return err
		}
		return &Error{Code: codes.Unknown, Message: err.Error(), Endpoint: endpoint}
	}
	e := &Error{Code: st.Code(), Message: strings.TrimPrefix(st.Message(), "coord: "), Endpoint: endpoint}
	if r := first(trailer, "coord-error"); r != "" {
		e.Reason = r
	} else {
		e.Reason = reasonByCode[st.Code()]
		if st.Code() == codes.Unavailable {
			e.Message = fmt.Sprintf("endpoint %s is unreachable (%s)", endpoint, st.Message())
		}
	}
	e.LeaderAddress = first(trailer, "coord-leader")
	e.LeaderID = first(trailer, "coord-leader-id")
	return e
}

func first(md metadata.MD, key string) string {
	if v := md.Get(key); len(v) > 0 {
		return v[0]
	}
	return ""
}

func retryable(err error) bool {
	var ce *Error
	return errors.As(err, &ce) && ce.Retryable()
}
