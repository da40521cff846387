package flow

import (
	"github.com/tcpsentry/tcpsentry/internal/flow/tcp"
	"github.com/tcpsentry/tcpsentry/internal/model"
)

// EndpointState is the state of one side of a TCP connection, Zeek's
// TCP_INACTIVE … TCP_RESET.
type EndpointState uint8

// TCP endpoint states.
const (
	EndpointInactive    EndpointState = EndpointState(tcp.Inactive)   // nothing seen from this side
	EndpointSynSent     EndpointState = EndpointState(tcp.SynSent)    // sent a SYN
	EndpointSynAckSent  EndpointState = EndpointState(tcp.SynAckSent) // sent a SYN-ACK as originator
	EndpointPartial     EndpointState = EndpointState(tcp.Partial)    // active, but its SYN was not seen
	EndpointEstablished EndpointState = EndpointState(tcp.Established)
	EndpointClosed      EndpointState = EndpointState(tcp.Closed) // sent a FIN
	EndpointReset       EndpointState = EndpointState(tcp.Reset)  // sent a RST
)

// ConnStateTCP is Zeek's conn_state for TCP (base/protocols/conn/main.zeek):
// a pure function of the endpoint states, the sizes and the history.
func ConnStateTCP(os, rs EndpointState, origSize, respSize uint64, history string) model.ConnState {
	oInactive := os == EndpointInactive || os == EndpointPartial
	rInactive := rs == EndpointInactive || rs == EndpointPartial
	switch {
	case rs == EndpointReset:
		if os == EndpointSynSent || os == EndpointSynAckSent || os == EndpointReset && origSize == 0 && respSize == 0 {
			return model.ConnREJ
		}
		if oInactive {
			return model.ConnRSTRH
		}
		return model.ConnRSTR
	case os == EndpointReset:
		if rInactive {
			if synThenRST(history) {
				return model.ConnRSTOS0
			}
			return model.ConnOTH
		}
		return model.ConnRSTO
	case rs == EndpointClosed && os == EndpointClosed:
		return model.ConnSF
	case os == EndpointClosed:
		if rInactive {
			return model.ConnSH
		}
		return model.ConnS2
	case rs == EndpointClosed:
		if oInactive {
			return model.ConnSHR
		}
		return model.ConnS3
	case os == EndpointSynSent && rs == EndpointInactive:
		return model.ConnS0
	case os == EndpointEstablished && rs == EndpointEstablished:
		return model.ConnS1
	}
	return model.ConnOTH
}

// synThenRST matches Zeek's /\^?S[^HAFGIQ]*R.*/ against the whole history:
// the originator sent a SYN and then a RST, and nothing answered.
func synThenRST(h string) bool {
	if len(h) > 0 && h[0] == '^' {
		h = h[1:]
	}
	if len(h) == 0 || h[0] != 'S' {
		return false
	}
	for i := 1; i < len(h); i++ {
		switch h[i] {
		case 'R':
			return true
		case 'H', 'A', 'F', 'G', 'I', 'Q':
			return false
		}
	}
	return false
}

// ConnStateUDP is Zeek's conn_state for UDP: which sides sent anything.
func ConnStateUDP(origActive, respActive bool) model.ConnState {
	switch {
	case origActive && respActive:
		return model.ConnSF
	case origActive:
		return model.ConnS0
	case respActive:
		return model.ConnSHR
	}
	return model.ConnOTH
}
