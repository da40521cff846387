package intel

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Config says which blocklist feeds and allowlist entries a Set is built from.
type Config struct {
	// Feeds are the blocklist files.
	Feeds []FeedSpec
	// Allow are allowlisted addresses or CIDRs written inline, such as the organisation's own
	// ranges or a scanner it runs on purpose.
	Allow []string
	// AllowFiles are allowlist files in any feed format.
	AllowFiles []string
}

// AllowlistName is the feed name of inline allowlist entries (Config.Allow), and the file name
// their errors give, with the entry's 1-based position as the line.
const AllowlistName = "allowlist"

// FeedInfo describes one loaded feed, for logs and for alerts that say how fresh a feed was.
type FeedInfo struct {
	Name    string            // the feed name
	Path    string            // the file it came from; empty for inline allowlist entries
	Allow   bool              // true for allowlist sources
	Entries int               // good lines read
	Errors  int               // errors reported for it (bad lines, or 1 when unreadable)
	Meta    map[string]string // header metadata, see Feed.Meta
}

// Set is the blocklists and the allowlist together, safe for concurrent use.
type Set struct {
	block *Table
	allow *Table
	feeds []FeedInfo
}

// Verdict is what a Set says about one address.
type Verdict struct {
	// Blocked is true when a blocklist lists the address and the allowlist does not.
	Blocked bool
	// Allowed is true when the allowlist lists the address; it wins over any blocklist.
	Allowed bool
	// Block is the most specific blocklist match; set whenever a blocklist lists the address,
	// also when Allowed, so that a report can say "listed by X but allowlisted". Feeds that
	// list only a wider prefix around it are not named.
	Block Match
	// Allow is the most specific allowlist match when Allowed.
	Allow Match
}

// Listed reports whether any blocklist lists the address, allowlisted or not.
func (v Verdict) Listed() bool { return len(v.Block.Entries) > 0 }

// Load reads every feed and allowlist in cfg. A file that is missing or unreadable, and every bad
// line, is reported in the returned errors while everything else still loads, so the returned Set
// is never nil.
func Load(cfg Config) (*Set, []error) {
	var errs []error
	var block, allow []Entry
	s := &Set{}
	for _, spec := range cfg.Feeds {
		if spec.Name == "" {
			spec.Name = feedName(spec.Path)
		}
		entries, info, ferrs := loadFile(spec)
		block = append(block, entries...)
		s.feeds = append(s.feeds, info)
		errs = append(errs, ferrs...)
	}
	for _, path := range cfg.AllowFiles {
		entries, info, ferrs := loadFile(FeedSpec{Path: path, Name: feedName(path)})
		info.Allow = true
		allow = append(allow, entries...)
		s.feeds = append(s.feeds, info)
		errs = append(errs, ferrs...)
	}
	if len(cfg.Allow) > 0 {
		info := FeedInfo{Name: AllowlistName, Allow: true}
		for i, a := range cfg.Allow {
			p, err := ParsePrefix(strings.TrimSpace(a))
			if err != nil {
				errs = append(errs, &LineError{File: AllowlistName, Line: i + 1, Field: "cidr", Value: a, Err: err})
				info.Errors++
				continue
			}
			allow = append(allow, Entry{Prefix: p, Feed: AllowlistName})
			info.Entries++
		}
		s.feeds = append(s.feeds, info)
	}
	s.block, s.allow = NewTable(block), NewTable(allow)
	return s, errs
}

// loadFile reads one feed file; its errors already name the file.
func loadFile(spec FeedSpec) ([]Entry, FeedInfo, []error) {
	info := FeedInfo{Name: spec.Name, Path: spec.Path}
	f, err := os.Open(spec.Path)
	if err != nil {
		info.Errors = 1
		return nil, info, []error{fmt.Errorf("feed %q: %w", spec.Name, err)}
	}
	defer f.Close()
	feed, errs := ReadFeed(f, spec)
	info.Entries, info.Errors, info.Meta = len(feed.Entries), len(errs), feed.Meta
	return feed.Entries, info, errs
}

// feedName derives a feed name from its file name: "firehol_level1.netset.gz" → "firehol_level1".
func feedName(path string) string {
	name := filepath.Base(path)
	name = strings.TrimSuffix(name, ".gz")
	if ext := filepath.Ext(name); ext != "" && ext != name {
		name = strings.TrimSuffix(name, ext)
	}
	return name
}

// Check says whether addr is blocklisted, allowlisted, or neither. It does not allocate.
func (s *Set) Check(addr netip.Addr) Verdict {
	var v Verdict
	v.Block, _ = s.block.Lookup(addr)
	v.Allow, v.Allowed = s.allow.Lookup(addr)
	v.Blocked = v.Listed() && !v.Allowed
	return v
}

// Feeds describes each source in load order: blocklists, allowlist files, inline allowlist.
func (s *Set) Feeds() []FeedInfo { return slices.Clone(s.feeds) }

// Len is the number of distinct blocklisted and allowlisted prefixes.
func (s *Set) Len() (blocked, allowed int) { return s.block.Len(), s.allow.Len() }
