// Package netlink enumerates a Linux host's sockets (NETLINK_SOCK_DIAG) and
// conntrack table (NETLINK_NETFILTER) over raw netlink, follows conntrack
// events (ListenConntrack, EventConn), and runs code inside other network
// namespaces.
//
// It speaks netlink itself, over golang.org/x/sys/unix, rather than through
// a general netlink library, for three reasons: the parsers take bytes so
// they can be fuzzed and tested against captured kernel replies in
// testdata/; a dump allocates nothing per socket beyond the result (one
// reused receive buffer, TCPInfo values carved from slabs), so that its
// cost is the kernel's, about 1 µs per socket, and not ours (0.1 µs); and
// a netlink socket is bound to the network namespace it was opened in,
// which is what per-netns enumeration needs (see InNetns and NewDumper).
//
// Errors that mean "this kernel or these privileges do not allow it"
// (EPERM, EACCES, EPROTONOSUPPORT, a missing diag module, …) wrap
// ErrUnavailable, so that callers fall back to /proc/net or report the
// gap once instead of failing. Errors returned together with records wrap
// ErrIncomplete.
package netlink

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// ErrUnavailable is wrapped by errors that say the kernel refused a netlink
// family or request for lack of support or privilege, as opposed to a
// malformed reply or an I/O failure. Callers test it with errors.Is and
// fall back (e.g. to /proc/net) instead of failing.
var ErrUnavailable = errors.New("unavailable")

// ErrIncomplete is wrapped by errors that come with a usable but partial
// result: some messages were malformed and skipped, or the kernel flagged a
// dump interrupted twice by concurrent changes. Callers keep the records
// and report the error as a warning.
var ErrIncomplete = errors.New("incomplete")

// unavailable wraps err with ErrUnavailable when its errno means "not
// supported here" or "not permitted", keeping err itself in the chain.
func unavailable(what string, err error, hint string) error {
	// EINVAL is not among them: it means our request was malformed, a bug
	// to see rather than a reason to fall back quietly.
	for _, e := range [...]unix.Errno{unix.EPERM, unix.EACCES, unix.EPROTONOSUPPORT,
		unix.EAFNOSUPPORT, unix.ENOENT, unix.EOPNOTSUPP} {
		if errors.Is(err, e) {
			if hint != "" && (e == unix.EPERM || e == unix.EACCES) {
				return fmt.Errorf("%s: %w: %w (%s)", what, ErrUnavailable, err, hint)
			}
			return fmt.Errorf("%s: %w: %w", what, ErrUnavailable, err)
		}
	}
	return fmt.Errorf("%s: %w", what, err)
}
