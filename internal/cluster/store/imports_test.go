package store_test

import (
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestImports keeps the cluster layer's dependencies pointing one way: store
// and election use only the etcd client (never the embedded server, which
// the controller alone starts) and no Godwit package above or beside them;
// etcdserver imports no Godwit package at all.
func TestImports(t *testing.T) {
	const mod = "github.com/godwit-vmm/godwit/"
	rules := map[string]func(string) bool{ // package dir -> forbidden import
		"../store": func(p string) bool {
			return strings.HasPrefix(p, mod) || strings.HasPrefix(p, "go.etcd.io/etcd/server/")
		},
		"../election": func(p string) bool {
			return strings.HasPrefix(p, mod) || strings.HasPrefix(p, "go.etcd.io/etcd/server/")
		},
		"../etcdserver": func(p string) bool { return strings.HasPrefix(p, mod) },
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
			src, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			af, err := parser.ParseFile(token.NewFileSet(), f, src, parser.ImportsOnly)
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
