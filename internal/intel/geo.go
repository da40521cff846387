package intel

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/oschwald/maxminddb-golang/v2"
)

// Geo answers country and autonomous-system questions from a MaxMind-format (.mmdb) database:
// GeoIP2/GeoLite2 Country or City, GeoLite2 ASN, or a compatible third-party database. It is
// safe for concurrent use.
type Geo struct {
	db   *maxminddb.Reader
	path string
}

// GeoInfo is what a database knows about one address; fields the database lacks are empty.
type GeoInfo struct {
	// Country is the ISO 3166-1 alpha-2 code where the address is used, falling back to the
	// country where its network is registered; empty when unknown (private ranges, an ASN
	// database).
	Country string
	// ASN is the autonomous system number; 0 when unknown or not an ASN database.
	ASN uint32
	// ASOrg is the autonomous system's organisation name.
	ASOrg string
	// Network is the database network that holds the address; invalid when not found.
	Network netip.Prefix
}

// geoRecord holds the fields of the GeoIP2 Country/City and GeoLite2 ASN layouts that we use;
// one struct serves all of them because absent fields simply stay empty.
type geoRecord struct {
	Country struct {
		ISOCode string `maxminddb:"iso_code"`
	} `maxminddb:"country"`
	RegisteredCountry struct {
		ISOCode string `maxminddb:"iso_code"`
	} `maxminddb:"registered_country"`
	ASN   uint32 `maxminddb:"autonomous_system_number"`
	ASOrg string `maxminddb:"autonomous_system_organization"`
}

// OpenGeo opens a MaxMind-format database. The file is memory-mapped, so it must not be
// rewritten in place while open; update it by renaming a new file over it and reopening.
func OpenGeo(path string) (*Geo, error) {
	db, err := maxminddb.Open(path)
	if err != nil {
		return nil, fmt.Errorf("geoip database %s: %w", path, err)
	}
	return &Geo{db: db, path: path}, nil
}

// Close releases the database; lookups after Close fail.
func (g *Geo) Close() error { return g.db.Close() }

// DatabaseType is the database's own type name, such as "GeoIP2-Country" or "GeoLite2-ASN".
func (g *Geo) DatabaseType() string { return g.db.Metadata.DatabaseType }

// Lookup returns what the database knows about addr, an IPv4-mapped address being looked up as
// IPv4. Not being in the database is not an error: the result is then empty.
func (g *Geo) Lookup(addr netip.Addr) (GeoInfo, error) {
	res := g.db.Lookup(addr.Unmap().WithZone("")) // as in Table.Lookup: a socket may show IPv4 mapped
	if err := res.Err(); err != nil {
		return GeoInfo{}, fmt.Errorf("geoip %s: lookup %s: %w", g.path, addr, err)
	}
	if !res.Found() {
		return GeoInfo{}, nil
	}
	var rec geoRecord
	if err := res.Decode(&rec); err != nil {
		return GeoInfo{}, fmt.Errorf("geoip %s: decode %s: %w", g.path, addr, err)
	}
	info := GeoInfo{Country: rec.Country.ISOCode, ASN: rec.ASN, ASOrg: rec.ASOrg, Network: res.Prefix()}
	if info.Country == "" {
		info.Country = rec.RegisteredCountry.ISOCode
	}
	return info, nil
}

// CountryPolicy flags remote addresses by country. Codes are ISO 3166-1 alpha-2, compared
// without regard to case. An address whose country is unknown (private, or absent from the
// database) never violates the policy: flagging every internal peer would bury real findings.
type CountryPolicy struct {
	// Geo is the database; with none the policy never flags anything.
	Geo *Geo
	// Deny lists countries that are never expected.
	Deny []string
	// AllowOnly, when not empty, lists the only countries expected.
	AllowOnly []string
}

// Validate checks the country codes, so that a typo in the config ("UK" is fine, "GBR" is not) is
// reported at load time instead of silently never matching.
func (p CountryPolicy) Validate() error {
	var errs []error
	for _, f := range []struct {
		name  string
		codes []string
	}{{"deny", p.Deny}, {"allow_only", p.AllowOnly}} {
		for i, c := range f.codes {
			if c = strings.TrimSpace(c); len(c) != 2 || !isLetter(c[0]) || !isLetter(c[1]) {
				errs = append(errs, fmt.Errorf("country policy: field %q entry %d: %q: not an ISO 3166-1 alpha-2 code", f.name, i+1, c))
			}
		}
	}
	return errors.Join(errs...)
}

func isLetter(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }

// Evaluate returns addr's country and whether it breaks the policy, with a reason for the alert's
// evidence. A database error is reported as the reason and does not count as a violation.
func (p CountryPolicy) Evaluate(addr netip.Addr) (country string, violates bool, reason string) {
	if p.Geo == nil {
		return "", false, "no GeoIP database"
	}
	info, err := p.Geo.Lookup(addr)
	if err != nil {
		return "", false, err.Error()
	}
	country = info.Country
	switch {
	case country == "":
		return "", false, "country unknown"
	case containsFold(p.Deny, country):
		return country, true, "country " + country + " is denied"
	case len(p.AllowOnly) > 0 && !containsFold(p.AllowOnly, country):
		return country, true, "country " + country + " is not in allow_only"
	}
	return country, false, "country " + country + " is allowed"
}

func containsFold(list []string, s string) bool {
	return slices.ContainsFunc(list, func(x string) bool { return strings.EqualFold(strings.TrimSpace(x), s) })
}
