package intel

import (
	"bytes"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/oschwald/maxminddb-golang/v2"
)

// The test databases are built by writeMMDB and kept in testdata/ (go test -update rewrites
// them) so that other packages' tests can open a real .mmdb too. Their networks follow the
// MaxMind test databases' choices, the data is made up here.
var testDBs = []struct {
	file   string
	dbType string
	nets   []mmdbNet
}{
	{"geo-country-test.mmdb", "GeoIP2-Country", []mmdbNet{
		{"81.2.69.142/31", country("GB")},
		{"2.125.160.216/29", country("GB")},
		{"89.160.20.112/28", country("SE")},
		{"89.160.20.120/30", country("RU")}, // overrides part of the SE network
		{"216.160.83.56/29", country("US")},
		{"67.43.156.0/24", map[string]any{"registered_country": map[string]any{"iso_code": "BT"}}},
		{"2001:218::/32", country("JP")},
		{"2a02:d280::/29", country("RU")},
	}},
	{"geo-asn-test.mmdb", "GeoLite2-ASN", []mmdbNet{
		{"1.128.0.0/11", map[string]any{"autonomous_system_number": uint32(1221), "autonomous_system_organization": "Telstra Pty Ltd"}},
		{"2600:6000::/20", map[string]any{"autonomous_system_number": uint32(237), "autonomous_system_organization": "Merit Network Inc."}},
	}},
}

func country(code string) map[string]any {
	c := map[string]any{"iso_code": code, "names": map[string]any{"en": "name of " + code}}
	return map[string]any{"country": c, "registered_country": c}
}

// TestMMDBFiles checks that the writer produces what is in testdata and that the reader library
// itself finds the result well formed.
func TestMMDBFiles(t *testing.T) {
	for _, db := range testDBs {
		b := writeMMDB(db.dbType, db.nets)
		path := filepath.Join("testdata", db.file)
		if *update {
			if err := os.WriteFile(path, b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if old, err := os.ReadFile(path); err != nil || !bytes.Equal(old, b) {
			t.Errorf("%s differs from writeMMDB output (go test -update to rewrite): %v", path, err)
		}
		r, err := maxminddb.OpenBytes(b)
		if err != nil {
			t.Fatalf("%s: %v", db.file, err)
		}
		if err := r.Verify(); err != nil {
			t.Errorf("%s: Verify: %v", db.file, err)
		}
	}
}

func openTestGeo(t *testing.T, file string) *Geo {
	t.Helper()
	g, err := OpenGeo(filepath.Join("testdata", file))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close() })
	return g
}

func TestGeoLookup(t *testing.T) {
	cg, ag := openTestGeo(t, "geo-country-test.mmdb"), openTestGeo(t, "geo-asn-test.mmdb")
	if cg.DatabaseType() != "GeoIP2-Country" || ag.DatabaseType() != "GeoLite2-ASN" {
		t.Errorf("types %q %q", cg.DatabaseType(), ag.DatabaseType())
	}
	tests := []struct {
		g       *Geo
		addr    string
		country string
		asn     uint32
		org     string
		network string
	}{
		{cg, "81.2.69.142", "GB", 0, "", "81.2.69.142/31"},
		{cg, "81.2.69.143", "GB", 0, "", "81.2.69.142/31"},
		{cg, "::ffff:81.2.69.142", "GB", 0, "", "81.2.69.142/31"},
		{cg, "89.160.20.113", "SE", 0, "", "89.160.20.112/29"},
		{cg, "89.160.20.121", "RU", 0, "", "89.160.20.120/30"},
		{cg, "67.43.156.1", "BT", 0, "", "67.43.156.0/24"}, // registered country only
		{cg, "2001:218:1::1", "JP", 0, "", "2001:218::/32"},
		{cg, "fe80::1%eth0", "", 0, "", ""},
		{cg, "10.0.0.1", "", 0, "", ""},
		{ag, "1.130.0.1", "", 1221, "Telstra Pty Ltd", "1.128.0.0/11"},
		{ag, "2600:6000::1", "", 237, "Merit Network Inc.", "2600:6000::/20"},
	}
	for _, tt := range tests {
		got, err := tt.g.Lookup(netip.MustParseAddr(tt.addr))
		if err != nil {
			t.Errorf("Lookup(%s): %v", tt.addr, err)
			continue
		}
		network := ""
		if got.Network.IsValid() {
			network = got.Network.String()
		}
		if got.Country != tt.country || got.ASN != tt.asn || got.ASOrg != tt.org || network != tt.network {
			t.Errorf("Lookup(%s) = %+v, want %s %d %q %s", tt.addr, got, tt.country, tt.asn, tt.org, tt.network)
		}
	}
}

func TestOpenGeoErrors(t *testing.T) {
	for _, path := range []string{"testdata/missing.mmdb", "testdata/firehol_level1.netset"} {
		_, err := OpenGeo(path)
		if err == nil || !strings.Contains(err.Error(), path) {
			t.Errorf("OpenGeo(%s) error = %v, want one naming the file", path, err)
		}
	}
}

func TestCountryPolicy(t *testing.T) {
	g := openTestGeo(t, "geo-country-test.mmdb")
	tests := []struct {
		policy   CountryPolicy
		addr     string
		country  string
		violates bool
		reason   string
	}{
		{CountryPolicy{Geo: g, Deny: []string{"ru"}}, "89.160.20.121", "RU", true, "country RU is denied"},
		{CountryPolicy{Geo: g, Deny: []string{"RU"}}, "89.160.20.113", "SE", false, "country SE is allowed"},
		{CountryPolicy{Geo: g, AllowOnly: []string{"GB", "SE"}}, "2001:218::1", "JP", true, "country JP is not in allow_only"},
		{CountryPolicy{Geo: g, AllowOnly: []string{"GB", " se"}}, "89.160.20.113", "SE", false, "country SE is allowed"},
		{CountryPolicy{Geo: g, AllowOnly: []string{"GB"}, Deny: []string{"GB"}}, "81.2.69.142", "GB", true, "country GB is denied"},
		{CountryPolicy{Geo: g, AllowOnly: []string{"GB"}}, "10.1.2.3", "", false, "country unknown"},
		{CountryPolicy{Deny: []string{"GB"}}, "81.2.69.142", "", false, "no GeoIP database"},
	}
	for _, tt := range tests {
		c, v, r := tt.policy.Evaluate(netip.MustParseAddr(tt.addr))
		if c != tt.country || v != tt.violates || r != tt.reason {
			t.Errorf("%+v.Evaluate(%s) = %q %v %q, want %q %v %q", tt.policy, tt.addr, c, v, r, tt.country, tt.violates, tt.reason)
		}
	}

	if err := (CountryPolicy{Deny: []string{"RU", "cn"}, AllowOnly: []string{"GB"}}).Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
	err := (CountryPolicy{Deny: []string{"RUS"}, AllowOnly: []string{"GB", "G1"}}).Validate()
	want := "country policy: field \"deny\" entry 1: \"RUS\": not an ISO 3166-1 alpha-2 code\n" +
		"country policy: field \"allow_only\" entry 2: \"G1\": not an ISO 3166-1 alpha-2 code"
	if err == nil || err.Error() != want {
		t.Errorf("Validate error = %v, want %s", err, want)
	}
}
