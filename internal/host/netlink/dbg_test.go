package netlink

import (
	"context"
	"fmt"
	"testing"

	"github.com/tcpsentry/tcpsentry/internal/model"
)

func TestDbgCount(t *testing.T) {
	for round := range 12 {
		ns := manySockets(t, 3, 9000)
		var d *Dumper
		InNetns(ns, func() (err error) { d, err = NewDumper(); return err })
		key := func(s model.Socket) string { return fmt.Sprint(s.State, s.Local, s.Remote, s.Inode) }
		var counts []int
		var sets []map[string]bool
		testing.AllocsPerRun(5, func() {
			socks, err := d.Sockets(context.Background(), DumpOptions{})
			if err != nil {
				t.Fatal(err)
			}
			m := map[string]bool{}
			for _, s := range socks {
				m[key(s)] = true
			}
			counts = append(counts, len(socks))
			sets = append(sets, m)
		})
		t.Logf("round %d counts %v", round, counts)
		for i, c := range counts {
			if c != 54003 {
				for j, o := range counts {
					if o == 54003 {
						var miss []string
						for k := range sets[j] {
							if !sets[i][k] {
								miss = append(miss, k)
							}
						}
						if len(miss) > 5 {
							miss = miss[:5]
						}
						t.Logf("run %d missing e.g. %v", i, miss)
						break
					}
				}
			}
		}
		d.Close()
	}
}
