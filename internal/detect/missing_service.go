package detect

import (
	"fmt"

	"github.com/tcpsentry/tcpsentry/internal/alert"
	"github.com/tcpsentry/tcpsentry/internal/config"
	"github.com/tcpsentry/tcpsentry/internal/model"
)

// MissingService reports expected listeners that are absent: a stopped
// security agent or a killed sshd is as telling as a new listener.
type MissingService struct {
	expected []config.ExpectedService
}

// NewMissingService builds the detector from services.expected.
func NewMissingService(cfg *config.Config) *MissingService {
	return &MissingService{expected: cfg.Services.Expected}
}

// Name implements Detector.
func (*MissingService) Name() string { return "missing-service" }

// ObserveSnapshot implements SnapshotDetector. Only the caller's own network
// namespace is considered unless the snapshot holds just one other.
func (d *MissingService) ObserveSnapshot(snap *model.Snapshot, emit Emit) {
	for _, e := range d.expected {
		proto := protoOf(e.Proto)
		found, wrongProcess := false, ""
		for i := range snap.Sockets {
			s := &snap.Sockets[i]
			if s.Proto != proto || !s.IsListener() || s.Local.Port() != uint16(e.Port) {
				continue
			}
			if e.Process == "" {
				found = true
				break
			}
			for _, p := range owners(snap, s) {
				if processMatches(p, e.Process) {
					found = true
				} else {
					wrongProcess = p.Name
				}
			}
			if found {
				break
			}
		}
		if found {
			continue
		}
		name := e.Name
		if name == "" {
			name = fmt.Sprintf("%s/%d", proto, e.Port)
		}
		a := alert.Alert{
			Entity:     fmt.Sprintf("service %s %s/%d %s", name, proto, e.Port, e.Process),
			Title:      fmt.Sprintf("expected service %s is not listening on %s/%d", name, proto, e.Port),
			Severity:   alert.High,
			Confidence: 0.9,
			// T1489 service stop; T1562.001 impair defenses when it is a security tool.
			Attack:     []string{"T1489"},
			Proto:      proto,
			DstPort:    uint16(e.Port),
			HasDstPort: true,
			FirstSeen:  seen(snap),
			Evidence:   map[string]any{"port": int(e.Port), "process": e.Process},
		}
		if wrongProcess != "" {
			a.Title = fmt.Sprintf("expected service %s on %s/%d is served by %s, not %s", name, proto, e.Port, wrongProcess, e.Process)
			a.Evidence["listening_process"] = wrongProcess
			a.Confidence = 0.8
		}
		emit(a)
	}
}
