package controller

import (
	"strings"
	"testing"

	"github.com/godwit-vmm/godwit/internal/testenv"
)

// TestImports keeps the controller's layers pointing one way: placement is
// pure (nothing of Godwit's), poolapi sees only the store's types, and the
// controller never reaches into the agent, the VMM or the migration engine.
func TestImports(t *testing.T) {
	const mod = "github.com/godwit-vmm/godwit/"
	rules := map[string]func(string) bool{
		"placement": func(p string) bool { return strings.HasPrefix(p, mod) || strings.HasPrefix(p, "go.etcd.io/") },
		"poolapi": func(p string) bool {
			return strings.HasPrefix(p, mod) && p != mod+"internal/cluster/store" || strings.HasPrefix(p, "go.etcd.io/etcd/server/")
		},
		".": func(p string) bool {
			for _, bad := range []string{"internal/agent", "internal/vm", "internal/kvm", "internal/migration", "internal/api", "internal/fence", "cmd/"} {
				if strings.HasPrefix(p, mod+bad) {
					return true
				}
			}
			return false
		},
	}
	testenv.CheckImports(t, rules)
}
