package output

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"time"

	"github.com/tcpsentry/tcpsentry/internal/model"
)

// maxLine bounds one `conns --json` line: a socket with thousands of owners
// and long command lines stays well under it.
const maxLine = 16 << 20

// jsonSocketIn is a `conns --json` line as ReadJSON decodes it.
type jsonSocketIn struct {
	Netns      string   `json:"netns"`
	Proto      string   `json:"proto"`
	State      string   `json:"state"`
	LocalAddr  *string  `json:"local_addr"`
	LocalPort  *uint16  `json:"local_port"`
	RemoteAddr *string  `json:"remote_addr"`
	RemotePort *uint16  `json:"remote_port"`
	RecvQ      uint32   `json:"recv_q"`
	SendQ      uint32   `json:"send_q"`
	UID        uint32   `json:"uid"`
	Inode      uint64   `json:"inode"`
	Iface      uint32   `json:"iface"`
	ConnStart  *string  `json:"conn_start"`
	TCP        *tcpIn   `json:"tcp"`
	Processes  []procIn `json:"processes"`
	Time       *string  `json:"time"`
	Host       string   `json:"host"`
}

type tcpIn struct {
	RTT          float64 `json:"rtt_ms"`
	RTTVar       float64 `json:"rttvar_ms"`
	Retransmits  uint8   `json:"retransmits"`
	TotalRetrans uint32  `json:"total_retrans"`
	BytesAcked   uint64  `json:"bytes_acked"`
	BytesRecv    uint64  `json:"bytes_received"`
	BytesSent    uint64  `json:"bytes_sent"`
	SegsOut      uint32  `json:"segs_out"`
	SegsIn       uint32  `json:"segs_in"`
	LastSend     float64 `json:"last_send_ms"`
	LastRecv     float64 `json:"last_recv_ms"`
}

type procIn struct {
	PID     int32    `json:"pid"`
	PPID    int32    `json:"ppid"`
	Name    string   `json:"name"`
	Exe     string   `json:"exe"`
	Cmdline []string `json:"cmdline"`
	UID     uint32   `json:"uid"`
	User    string   `json:"user"`
	Start   *string  `json:"start"`
	TTY     uint32   `json:"tty"`
	FDs     []int32  `json:"fds"`
}

// ReadJSON reads what WriteJSON wrote (`conns --json`) back into a
// snapshot, so that one host's sockets can be recorded and checked
// elsewhere. A bad line is reported as NAME:LINE with the field, and the
// other lines are still used. Pipes between processes are not part of the
// format, so a recorded snapshot cannot show a shell relayed through pipes.
func ReadJSON(r io.Reader, name string) (*model.Snapshot, []error) {
	snap := &model.Snapshot{Processes: map[int32]*model.Process{}}
	var errs []error
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), maxLine)
	line := 0
	for sc.Scan() {
		line++
		if len(sc.Bytes()) == 0 {
			continue
		}
		var in jsonSocketIn
		if err := json.Unmarshal(sc.Bytes(), &in); err != nil {
			var te *json.UnmarshalTypeError
			if errors.As(err, &te) {
				errs = append(errs, fmt.Errorf("%s:%d: field %q: %v", name, line, te.Field, err))
			} else {
				errs = append(errs, fmt.Errorf("%s:%d: %w", name, line, err))
			}
			continue
		}
		s, err := in.socket(snap)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s:%d: %w", name, line, err))
			continue
		}
		snap.Sockets = append(snap.Sockets, s)
	}
	if err := sc.Err(); err != nil {
		errs = append(errs, fmt.Errorf("%s:%d: %w", name, line+1, err))
	}
	return snap, errs
}

func parseTime(field string, s *string) (time.Time, error) {
	if s == nil {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, *s)
	if err != nil {
		return time.Time{}, fmt.Errorf("field %q: %q is not an RFC 3339 time", field, *s)
	}
	return t, nil
}

func parseEndpoint(addrField string, addr *string, port *uint16) (netip.AddrPort, error) {
	if addr == nil {
		return netip.AddrPort{}, nil
	}
	a, err := netip.ParseAddr(*addr)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("field %q: %q is not an IP address", addrField, *addr)
	}
	var p uint16
	if port != nil {
		p = *port
	}
	return netip.AddrPortFrom(a, p), nil
}

// socket converts one line, adding its processes to snap.
func (in *jsonSocketIn) socket(snap *model.Snapshot) (model.Socket, error) {
	s := model.Socket{Netns: in.Netns, RecvQ: in.RecvQ, SendQ: in.SendQ, UID: in.UID, Inode: in.Inode, Iface: in.Iface}
	var ok bool
	if s.Proto, ok = model.ParseProto(in.Proto); !ok || (s.Proto != model.ProtoTCP && s.Proto != model.ProtoUDP) {
		return s, fmt.Errorf("field \"proto\": %q is not tcp or udp", in.Proto)
	}
	if s.State, ok = model.ParseState(in.State); !ok {
		return s, fmt.Errorf("field \"state\": unknown state %q", in.State)
	}
	var err error
	if s.Local, err = parseEndpoint("local_addr", in.LocalAddr, in.LocalPort); err != nil {
		return s, err
	}
	if s.Remote, err = parseEndpoint("remote_addr", in.RemoteAddr, in.RemotePort); err != nil {
		return s, err
	}
	if s.ConnStart, err = parseTime("conn_start", in.ConnStart); err != nil {
		return s, err
	}
	t, err := parseTime("time", in.Time)
	if err != nil {
		return s, err
	}
	if snap.Time.IsZero() {
		snap.Time = t
	}
	if snap.Host == "" {
		snap.Host = in.Host
	}
	if in.TCP != nil {
		ms := func(v float64) time.Duration { return time.Duration(v * float64(time.Millisecond)) }
		s.TCP = &model.TCPInfo{
			RTT: ms(in.TCP.RTT), RTTVar: ms(in.TCP.RTTVar), Retransmits: in.TCP.Retransmits,
			TotalRetrans: in.TCP.TotalRetrans, BytesAcked: in.TCP.BytesAcked, BytesReceived: in.TCP.BytesRecv,
			BytesSent: in.TCP.BytesSent, SegsOut: in.TCP.SegsOut, SegsIn: in.TCP.SegsIn,
			LastSend: ms(in.TCP.LastSend), LastRecv: ms(in.TCP.LastRecv),
		}
	}
	for i := range in.Processes {
		p := &in.Processes[i]
		s.Owners = append(s.Owners, model.Owner{PID: p.PID, FDs: p.FDs})
		if _, seen := snap.Processes[p.PID]; seen || p.Name == "" {
			continue
		}
		start, err := parseTime("processes.start", p.Start)
		if err != nil {
			return s, err
		}
		snap.Processes[p.PID] = &model.Process{PID: p.PID, PPID: p.PPID, Name: p.Name, Exe: p.Exe, Cmdline: p.Cmdline,
			UID: p.UID, User: p.User, Start: start, TTY: p.TTY}
	}
	return s, nil
}
