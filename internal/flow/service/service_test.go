package service

import (
	"encoding/hex"
	"testing"
)

func mustHex(t testing.TB, s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// dnsQuery is a query for example.com A.
const dnsQuery = "abcd01000001000000000000076578616d706c6503636f6d0000010001"

func TestIdentify(t *testing.T) {
	cases := []struct {
		name     string
		tr       Transport
		payload  []byte
		fromOrig bool
		want     ID
	}{
		{"ssh client banner", TCP, []byte("SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n"), true, SSH},
		{"ssh server banner", TCP, []byte("SSH-2.0-dropbear_2022.83\r\n"), false, SSH},
		{"ssh 1.99", TCP, []byte("SSH-1.99-Cisco-1.25\r\n"), false, SSH},
		{"http request", TCP, []byte("GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n"), true, HTTP},
		{"http absolute uri", TCP, []byte("GET http://example.com/ HTTP/1.1\r\n"), true, HTTP},
		{"http connect", TCP, []byte("CONNECT example.com:443 HTTP/1.1\r\n"), true, HTTP},
		{"http response", TCP, []byte("HTTP/1.1 200 OK\r\n"), false, HTTP},
		{"http2 preface", TCP, []byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), true, HTTP},
		{"tls client hello", TCP, mustHex(t, "160301020001000200"), true, TLS},
		{"tls 1.3 server hello", TCP, mustHex(t, "160303007a0200007603"), false, TLS},
		{"sslv2 client hello", TCP, mustHex(t, "802e0103010015"), true, TLS},
		{"tls alert is not a hello", TCP, mustHex(t, "150303000202"), true, Unknown},
		{"irc client", TCP, []byte("NICK bot1234\r\nUSER bot 0 * :bot\r\n"), true, IRC},
		{"irc server notice", TCP, []byte(":irc.example.net NOTICE * :*** Looking up your hostname\r\n"), false, IRC},
		{"irc server numeric", TCP, []byte(":irc.example.net 001 bot :Welcome\r\n"), false, IRC},
		{"smb2 negotiate", TCP, mustHex(t, "000000b0fe534d4240000000"), true, SMB},
		{"smb1 negotiate", TCP, mustHex(t, "00000085ff534d4272000000"), true, SMB},
		{"rdp connection request", TCP, mustHex(t, "0300002b26e00000000000436f6f6b69653a206d737473686173683d"), true, RDP},
		{"dns over udp query", UDP, mustHex(t, dnsQuery), true, DNS},
		{"dns over udp response", UDP, mustHex(t, "abcd81800001000100000000076578616d706c6503636f6d0000010001c00c000100010000012c00045db8d822"), false, DNS},
		{"dns response sent as query", UDP, mustHex(t, "abcd81800001000100000000076578616d706c6503636f6d0000010001"), true, Unknown},
		{"dns over tcp", TCP, append([]byte{0, byte(len(dnsQuery) / 2)}, mustHex(t, dnsQuery)...), true, DNS},
		{"smtp greeting", TCP, []byte("220 mail.example.com ESMTP Postfix\r\n"), false, SMTP},
		{"smtp ehlo", TCP, []byte("EHLO client.example.com\r\n"), true, SMTP},
		{"ftp greeting", TCP, []byte("220 (vsFTPd 3.0.3)\r\n"), false, FTP},
		{"220 of nothing known", TCP, []byte("220 welcome\r\n"), false, Unknown},
		{"pop3", TCP, []byte("+OK Dovecot ready.\r\n"), false, POP3},
		{"imap", TCP, []byte("* OK [CAPABILITY IMAP4rev1] ready\r\n"), false, IMAP},
		{"socks5 greeting", TCP, []byte{5, 1, 0}, true, SOCKS},
		{"socks5 bad method", TCP, []byte{5, 1, 0x40}, true, Unknown},
		{"socks4 connect", TCP, []byte{4, 1, 0, 80, 10, 0, 0, 1, 'u', 0}, true, SOCKS},
		{"vnc", TCP, []byte("RFB 003.008\n"), false, RFB},
		{"mysql greeting", TCP, append([]byte{12, 0, 0, 0, 10}, []byte("8.0.36\x00abcd")...), false, MySQL},
		{"random bytes", TCP, mustHex(t, "8f3a91c2d4e5f60718293a4b5c6d7e8f"), true, Unknown},
		{"empty", TCP, nil, true, Unknown},
		{"text chat", TCP, []byte("hello there\n"), true, Unknown},
		{"http response from the client side", TCP, []byte("HTTP/1.1 200 OK\r\n"), true, Unknown},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := Identify(tc.tr, tc.payload, tc.fromOrig); got != tc.want {
				t.Errorf("Identify = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestNames(t *testing.T) {
	for id := Unknown + 1; id < numIDs; id++ {
		if id.String() == "" {
			t.Errorf("ID %d has no name", id)
		}
	}
	if TLS.String() != "ssl" || ID(200).String() != "" {
		t.Errorf("TLS is %q (Zeek says ssl), 200 is %q", TLS, ID(200))
	}
}

// FuzzIdentify feeds arbitrary first payloads: Identify must not panic and
// must answer the same for the same bytes.
func FuzzIdentify(f *testing.F) {
	f.Add([]byte("SSH-2.0-x\r\n"), false, true)
	f.Add([]byte("GET / HTTP/1.1\r\n"), true, true)
	f.Add(mustHex(f, "160301020001000200"), true, true)
	f.Add(mustHex(f, dnsQuery), true, false)
	f.Add(mustHex(f, "0300002b26e0000000000043"), true, true)
	f.Add([]byte{0, 0x1d, 0xab, 0xcd, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 7}, true, true)
	f.Add([]byte(":a 001 b\r\n"), false, true)
	f.Fuzz(func(t *testing.T, b []byte, fromOrig, tcp bool) {
		tr := UDP
		if tcp {
			tr = TCP
		}
		id := Identify(tr, b, fromOrig)
		if id >= numIDs {
			t.Fatalf("ID %d out of range", id)
		}
		if again := Identify(tr, b, fromOrig); again != id {
			t.Fatalf("not deterministic: %v then %v", id, again)
		}
	})
}
