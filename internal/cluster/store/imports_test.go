package store_test

import (
	"strings"
	"testing"

	"github.com/godwit-vmm/godwit/internal/testenv"
)

// TestImports keeps the cluster layer's dependencies pointing one way: store
// and election use only the etcd client (never the embedded server, which
// the controller alone starts) and no Godwit package above or beside them but the leaf package limits
// (the one grammar of names);
// etcdserver imports no Godwit package at all.
func TestImports(t *testing.T) {
	const mod = "github.com/godwit-vmm/godwit/"
	rules := map[string]func(string) bool{ // package dir -> forbidden import
		"../store": func(p string) bool {
			return strings.HasPrefix(p, mod) && p != mod+"internal/limits" || strings.HasPrefix(p, "go.etcd.io/etcd/server/")
		},
		"../election": func(p string) bool {
			return strings.HasPrefix(p, mod) || strings.HasPrefix(p, "go.etcd.io/etcd/server/")
		},
		"../etcdserver": func(p string) bool { return strings.HasPrefix(p, mod) },
	}
	testenv.CheckImports(t, rules)
}
