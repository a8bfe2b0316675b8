package controller

import (
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
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
	for dir, forbidden := range rules {
		files, err := filepath.Glob(filepath.Join(dir, "*.go"))
		if err != nil || len(files) == 0 {
			t.Fatalf("%s: no Go files (%v)", dir, err)
		}
		for _, f := range files {
			if strings.HasSuffix(f, "_test.go") {
				continue
			}
			af, err := parser.ParseFile(token.NewFileSet(), f, nil, parser.ImportsOnly)
			if err != nil {
				t.Fatal(err)
			}
			for _, imp := range af.Imports {
				p, _ := strconv.Unquote(imp.Path.Value)
				if forbidden(p) {
					t.Errorf("%s imports %s", f, p)
				}
			}
		}
	}
}
