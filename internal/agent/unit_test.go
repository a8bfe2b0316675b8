package agent

import (
	"crypto/tls"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/godwit-vmm/godwit/internal/cluster/store"
	"github.com/godwit-vmm/godwit/internal/kvm"
	"github.com/godwit-vmm/godwit/internal/pki"
	"github.com/godwit-vmm/godwit/internal/testenv"
)

func TestParseFlags(t *testing.T) {
	dir := t.TempDir()
	self, _ := os.Executable()
	base := []string{"--host", "h1", "--etcd", "http://127.0.0.1:2379, http://127.0.0.2:2379", "--state-dir", dir, "--credential", "cred", "--godwit", self}
	tests := []struct {
		name  string
		extra []string
		want  string // error substring; "" = ok
		check func(*Config) bool
	}{
		{"defaults", nil, "", func(c *Config) bool {
			return c.PortLo == 4400 && c.PortHi == 4499 && len(c.Etcd) == 2 && filepath.IsAbs(c.Credential) && c.LeaseTTL.Seconds() == 10
		}},
		{"bridges", []string{"--bridge", "br0", "--bridge", "vmnet=br1", "--storage-id", "nfs1=" + dir}, "", func(c *Config) bool {
			return c.Bridges["br0"] == "br0" && c.Bridges["vmnet"] == "br1" && c.StorageIDs[0] == "nfs1" && c.Storage["nfs1"].Root != ""
		}},
		{"test lease", []string{"--lease-ttl", "3s", "--lease-margin", "600ms"}, "", nil},
		{"bad host", []string{"--host", "H/1"}, "host name", nil},
		{"bad ports", []string{"--migrate-ports", "5000-4000"}, "--migrate-ports", nil},
		{"bad ip", []string{"--migrate-ip", "nowhere"}, "--migrate-ip", nil},
		{"bad lease", []string{"--lease-ttl", "3s", "--lease-margin", "2s"}, "renewals", nil},
		{"no credential", []string{"--credential", ""}, "--credential is required", nil},
		{"bad bridge", []string{"--bridge", "net="}, "--bridge", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := ParseFlags(append(append([]string{}, base...), tc.extra...))
			if tc.want != "" {
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("err %v, want one mentioning %q", err, tc.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tc.check != nil && !tc.check(c) {
				t.Errorf("config %+v", c)
			}
		})
	}
}

func TestTapName(t *testing.T) {
	seen := map[string]bool{}
	for _, host := range []string{"h1", "h2"} {
		for _, vm := range []string{"vm1", "vm2", strings.Repeat("x", 63)} {
			n := tapName(host, vm)
			if len(n) > 15 || !strings.HasPrefix(n, "gw") {
				t.Errorf("tap %q: want ≤ 15 bytes starting gw", n)
			}
			if seen[n] {
				t.Errorf("tap %q twice", n)
			}
			seen[n] = true
		}
	}
	if n := tapName("h1", "vm1"); n != "gw"+n[2:] || !seen[n] {
		t.Error("tap name not stable")
	}
}

func TestHashCPUID(t *testing.T) {
	a := []kvm.CPUIDEntry2{{Function: 1, EAX: 5}, {Function: 0, EAX: 0xd}, {Function: 7, Index: 1, EBX: 2}}
	b := []kvm.CPUIDEntry2{a[2], a[0], a[1]}
	if hashCPUID(a) != hashCPUID(b) {
		t.Error("hash depends on entry order")
	}
	b[0].EBX = 3
	if hashCPUID(a) == hashCPUID(b) {
		t.Error("hash ignores a register")
	}
}

// TestAPIAccess: the agent's API is HTTPS with a certificate of the pool,
// checked at the handshake, and each route serves only its callers: the
// controller everything, users and hosts reading, the console only the
// controller, an incoming VM only the host the request names as source.
func TestAPIAccess(t *testing.T) {
	p := testenv.NewPoolPKI(t, "godwit")
	self, _ := os.Executable()
	a := &Agent{cfg: Config{Host: "h1", Godwit: self, StateDir: t.TempDir()}, procs: map[string]*vmmProc{},
		cred: p.Credential(t, pki.RoleHost, "h1", "127.0.0.1")}
	a.metrics = newMetrics(a)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: a.handler(), TLSConfig: a.apiTLS(), ErrorLog: log.New(io.Discard, "", 0)}
	go hs.ServeTLS(ln, "", "")
	defer hs.Close()
	base := "https://" + ln.Addr().String()
	as := func(role pki.Role, name string) *http.Client {
		cfg := p.Credential(t, role, name).ClientConfig("", pki.AllowPeer(pki.RoleHost, "h1"))
		return &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}}
	}
	ctl, user, h2 := as(pki.RoleController, "c1"), as(pki.RoleUser, "alice"), as(pki.RoleHost, "h2")
	for _, tc := range []struct {
		who          string
		c            *http.Client
		method, path string
		body         string
		want         int
	}{
		{"controller", ctl, "GET", "/v1/host", "", 200},
		{"user", user, "GET", "/v1/host", "", 200},
		{"host", h2, "GET", "/metrics", "", 200},
		{"user", user, "GET", "/v1/vms/vm1/console?offset=0", "", 403},
		{"host", h2, "POST", "/v1/vms/vm1/console", `{"text":"x"}`, 403},
		{"controller", ctl, "GET", "/v1/vms/vm1/console?offset=0", "", 404},
		{"user", user, "POST", "/v1/incoming", `{"vm":"vm1","src":"alice"}`, 403},
		{"host h2 for h3", h2, "POST", "/v1/incoming", `{"vm":"vm1","src":"h3"}`, 403},
		{"user", user, "DELETE", "/v1/incoming/vm1", "", 403},
	} {
		req, _ := http.NewRequest(tc.method, base+tc.path, strings.NewReader(tc.body))
		resp, err := tc.c.Do(req)
		if err != nil {
			t.Errorf("%s %s as %s: %v", tc.method, tc.path, tc.who, err)
			continue
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("%s %s as %s: %d, want %d", tc.method, tc.path, tc.who, resp.StatusCode, tc.want)
		}
	}
	// No certificate, or another pool's: refused at the handshake.
	foreign := testenv.NewPoolPKI(t, "godwit").Credential(t, pki.RoleController, "c1").ClientConfig("", nil)
	for what, cfg := range map[string]*tls.Config{"no certificate": {InsecureSkipVerify: true}, "another CA's": foreign} {
		c := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}}
		if resp, err := c.Get(base + "/v1/host"); err == nil {
			resp.Body.Close()
			t.Errorf("%s: answered %s", what, resp.Status)
		}
	}
}

func TestDeviceArgs(t *testing.T) {
	dir := t.TempDir()
	nfs := filepath.Join(dir, "nfs")
	os.Mkdir(nfs, 0o755)
	img := filepath.Join(nfs, "d.img")
	secret := filepath.Join(dir, "secret")
	for _, f := range []string{img, secret} {
		if err := os.WriteFile(f, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	os.Symlink(secret, filepath.Join(nfs, "escape.img"))
	os.Symlink(img, filepath.Join(nfs, "link.img"))
	storage, ids, err := parseStorage([]string{"nfs1=" + nfs}, []string{"dev=/dev"})
	if err != nil || len(ids) != 2 {
		t.Fatalf("parseStorage: %v %v", ids, err)
	}
	a := &Agent{cfg: Config{Host: "h1", Bridges: map[string]string{"vmnet": "br0"}, Storage: storage}}
	spec := &store.VMSpec{
		NICs:  []store.NICSpec{{Network: "vmnet", MAC: "52:54:00:00:00:01"}},
		Disks: []store.DiskSpec{{Path: filepath.Join(nfs, "link.img"), StorageID: "nfs1"}},
	}
	args, tap, err := a.deviceArgs("vm1", spec)
	want := "--tap " + tapName("h1", "vm1") + " --bridge br0 --mac 52:54:00:00:00:01 --disk " + img
	if err != nil || strings.Join(args, " ") != want || tap != tapName("h1", "vm1") {
		t.Errorf("args %q tap %q err %v, want %q", args, tap, err, want)
	}
	disk := func(path, id string) store.VMSpec {
		return store.VMSpec{Disks: []store.DiskSpec{{Path: path, StorageID: id}}}
	}
	for _, bad := range []struct {
		spec store.VMSpec
		want string
	}{
		{store.VMSpec{NICs: []store.NICSpec{{Network: "other"}}}, `network "other" has no bridge`},
		{disk("/x", "san"), `storage "san" is not reachable`},
		{disk(secret, "nfs1"), "outside storage nfs1"},
		{disk(filepath.Join(nfs, "escape.img"), "nfs1"), "outside storage nfs1"},
		{disk(filepath.Join(nfs, "..", "secret"), "nfs1"), "outside storage nfs1"},
		{disk("d.img", "nfs1"), "must be absolute"},
		{disk(nfs, "nfs1"), "outside storage"},
		{disk("/dev/null", "dev"), "not a regular file or block device"},
		{disk(filepath.Join(nfs, "missing.img"), "nfs1"), "no such file"},
		{store.VMSpec{NICs: make([]store.NICSpec, 2)}, "at most one"},
	} {
		if _, _, err := a.deviceArgs("vm1", &bad.spec); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%+v: err %v, want %q", bad.spec, err, bad.want)
		}
	}
	for _, bad := range [][]string{{"rel/dir"}, {"x=" + img}, {"x=" + nfs, "x=" + dir}, {"=" + nfs}} {
		if _, _, err := parseStorage(bad, nil); err == nil {
			t.Errorf("parseStorage(%q) accepted", bad)
		}
	}
}
