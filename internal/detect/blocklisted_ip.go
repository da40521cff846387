package detect

import (
	"fmt"
	"net/netip"

	"github.com/tcpsentry/tcpsentry/internal/alert"
	"github.com/tcpsentry/tcpsentry/internal/config"
	"github.com/tcpsentry/tcpsentry/internal/model"
)

// IntelHit is why an address is bad: a blocklist entry or a country policy.
type IntelHit struct {
	Kind      string // "blocklist" or "geoip"
	Feed      string // feed name, for blocklists
	Prefix    netip.Prefix
	Reference string // e.g. a Spamhaus SBL id
	Country   string // ISO code, for GeoIP policy hits
	Reason    string
}

// IntelChecker matches addresses against threat intelligence; allowlisted
// addresses never match.
type IntelChecker interface {
	Lookup(a netip.Addr) (IntelHit, bool)
}

// BlocklistedIP reports sockets whose peer is on a blocklist or in a denied country.
type BlocklistedIP struct {
	intel IntelChecker
	allow Nets
}

// NewBlocklistedIP builds the detector; with no intel it reports nothing.
func NewBlocklistedIP(cfg *config.Config, intel IntelChecker) *BlocklistedIP {
	d := &BlocklistedIP{intel: intel}
	for _, p := range cfg.Allowlist.Addresses {
		d.allow = append(d.allow, p.Prefix)
	}
	return d
}

// Name implements Detector.
func (*BlocklistedIP) Name() string { return "blocklisted-ip" }

// ObserveSnapshot implements SnapshotDetector.
func (d *BlocklistedIP) ObserveSnapshot(snap *model.Snapshot, emit Emit) {
	if d.intel == nil {
		return
	}
	ix := newListenerIndex(snap)
	for i := range snap.Sockets {
		s := &snap.Sockets[i]
		r := s.Remote.Addr().Unmap()
		if s.IsListener() || !r.IsValid() || r.IsUnspecified() || d.allow.Contains(r) {
			continue
		}
		hit, ok := d.intel.Lookup(r)
		if !ok {
			continue
		}
		proc := firstOwner(snap, s)
		a := socketAlert(snap, s, proc, ix)
		a.Entity = fmt.Sprintf("intel %s %s %v", hit.Kind, s.Proto, r)
		a.Attack = []string{"T1071"}
		ev := map[string]any{"kind": hit.Kind, "state": model.SocketStateName(s.Proto, s.State), "peer": s.Remote.String()}
		if hit.Kind == "geoip" {
			a.Title = fmt.Sprintf("connection with %v in %s: %s", r, hit.Country, hit.Reason)
			a.Severity, a.Confidence = alert.Medium, 0.6
			ev["country"] = hit.Country
			ev["reason"] = hit.Reason
		} else {
			a.Title = fmt.Sprintf("connection with blocklisted %v (%s)", r, hit.Feed)
			a.Severity, a.Confidence = alert.High, 0.85
			ev["feed"] = hit.Feed
			ev["prefix"] = hit.Prefix.String()
			if hit.Reference != "" {
				ev["reference"] = hit.Reference
			}
		}
		a.Evidence = ev
		emit(a)
	}
}
