package output

import (
	"os/user"
	"strconv"

	"github.com/tcpsentry/tcpsentry/internal/model"
)

// userNames resolves uids to names for one rendering call, asking each
// distinct uid once: a host with 50,000 sockets has a handful of users.
type userNames struct {
	lookup func(uid uint32) string // caller's lookup; nil: snapshot, then the system database
	snap   *model.Snapshot
	cache  map[uint32]string
}

func newUserNames(lookup func(uint32) string, snap *model.Snapshot) *userNames {
	return &userNames{lookup: lookup, snap: snap, cache: make(map[uint32]string)}
}

// name returns the user name of uid, or "" when unknown.
func (u *userNames) name(uid uint32) string {
	if n, ok := u.cache[uid]; ok {
		return n
	}
	var n string
	if u.lookup != nil {
		n = u.lookup(uid)
	} else {
		n = u.fromSnapshot(uid)
		if n == "" {
			// The snapshot names only users that own a process with a
			// socket; a TIME_WAIT socket's or another user's uid needs the
			// passwd database (pure Go: reads /etc/passwd).
			if usr, err := user.LookupId(strconv.FormatUint(uint64(uid), 10)); err == nil {
				n = usr.Username
			}
		}
	}
	u.cache[uid] = n
	return n
}

// fromSnapshot takes the name the collector resolved for a process with
// the same uid, so that output agrees with the process records.
func (u *userNames) fromSnapshot(uid uint32) string {
	if u.snap == nil {
		return ""
	}
	for _, p := range u.snap.Processes {
		if p != nil && p.UID == uid && p.User != "" {
			return p.User
		}
	}
	return ""
}

// orUID returns the user name of uid, or the number when the name is unknown.
func (u *userNames) orUID(uid uint32) string {
	if n := u.name(uid); n != "" {
		return n
	}
	return strconv.FormatUint(uint64(uid), 10)
}
