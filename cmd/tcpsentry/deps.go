package main

import (
	"context"
	"fmt"
	"net/netip"

	"github.com/tcpsentry/tcpsentry/internal/config"
	"github.com/tcpsentry/tcpsentry/internal/detect"
	"github.com/tcpsentry/tcpsentry/internal/intel"
	"github.com/tcpsentry/tcpsentry/internal/store"
)

// buildDeps loads what detectors need besides the config: the learned
// baseline and threat intelligence. What cannot be loaded becomes a warning
// (a bad feed line names file and line) and the rest still runs.
func buildDeps(ctx context.Context, cfg *config.Config, st *store.Store, source string) (detect.Deps, []string) {
	var deps detect.Deps
	var warnings []string
	if st != nil {
		set, _, err := st.LoadBaseline(ctx, source)
		switch {
		case err != nil:
			warnings = append(warnings, fmt.Sprintf("baseline not loaded: %v", err))
		case set != nil:
			deps.Profiles = set
		}
	}
	checker, ws := loadIntel(cfg)
	warnings = append(warnings, ws...)
	if checker != nil {
		deps.Intel = checker
	}
	return deps, warnings
}

// intelChecker adapts the intel package to the detectors' IntelChecker.
type intelChecker struct {
	set    *intel.Set
	policy *intel.CountryPolicy
}

func loadIntel(cfg *config.Config) (*intelChecker, []string) {
	var warnings []string
	ic := &intelChecker{}
	if len(cfg.Intel.Feeds) > 0 || len(cfg.Allowlist.Addresses) > 0 {
		ic2 := intel.Config{}
		for _, f := range cfg.Intel.Feeds {
			spec := intel.FeedSpec{Path: f.Path, Name: f.Name}
			switch f.Format {
			case "plain":
				spec.Format = intel.FormatPlain
			case "netset":
				spec.Format = intel.FormatNetset
			case "drop":
				spec.Format = intel.FormatDROP
			}
			ic2.Feeds = append(ic2.Feeds, spec)
		}
		for _, a := range cfg.Allowlist.Addresses {
			ic2.Allow = append(ic2.Allow, a.Prefix.String())
		}
		set, errs := intel.Load(ic2)
		for _, err := range errs {
			warnings = append(warnings, err.Error())
		}
		ic.set = set
	}
	if g := cfg.Intel.GeoIP; g.Database != "" {
		db, err := intel.OpenGeo(g.Database)
		if err != nil {
			warnings = append(warnings, fmt.Sprintf("geoip: %v", err))
		} else {
			p := &intel.CountryPolicy{Geo: db, Deny: g.DenyCountries, AllowOnly: g.AllowOnly}
			if err := p.Validate(); err != nil {
				warnings = append(warnings, fmt.Sprintf("geoip policy: %v", err))
			} else {
				ic.policy = p
			}
		}
	}
	if ic.set == nil && ic.policy == nil {
		return nil, warnings
	}
	return ic, warnings
}

// Lookup implements detect.IntelChecker: allowlisted addresses never match;
// a blocklist hit wins over a country policy.
func (ic *intelChecker) Lookup(a netip.Addr) (detect.IntelHit, bool) {
	if ic.set != nil {
		v := ic.set.Check(a)
		if v.Allowed {
			return detect.IntelHit{}, false
		}
		if v.Blocked {
			h := detect.IntelHit{Kind: "blocklist", Prefix: v.Block.Prefix}
			if len(v.Block.Entries) > 0 {
				h.Feed, h.Reference = v.Block.Entries[0].Feed, v.Block.Entries[0].Ref
			}
			return h, true
		}
	}
	if ic.policy != nil {
		if country, bad, reason := ic.policy.Evaluate(a); bad {
			return detect.IntelHit{Kind: "geoip", Country: country, Reason: reason}, true
		}
	}
	return detect.IntelHit{}, false
}
