package placement

import (
	"math"
	"strings"
	"testing"
)

const GiB = 1 << 30

func host(name string) Host {
	return Host{Name: name, Alive: true, State: "active", CPUIDHash: "cpu-a", TSCKHz: 2_000_000,
		CPUs: 2, MemBytes: 4 * GiB, Storage: []string{"nfs1"}, Networks: []string{"br0"}}
}

func vm() VM {
	return VM{Name: "vm1", VCPUs: 1, MemBytes: 1 * GiB, Storage: []string{"nfs1"}, Networks: []string{"br0"}}
}

func TestCheck(t *testing.T) {
	from := host("src")
	cases := []struct {
		name string
		h    func(*Host)
		vm   func(*VM)
		from *Host
		want string // substring of the reasons; "" = fits
	}{
		{name: "fits"},
		{name: "not alive", h: func(h *Host) { h.Alive = false }, want: "not alive"},
		{name: "draining", h: func(h *Host) { h.State = "draining" }, want: "state draining"},
		{name: "no state", h: func(h *Host) { h.State = "" }, want: "state unset"},
		// 4 GiB − 512 MiB reserve = 3584 MiB; 1 GiB + 256 MiB overhead = 1280 MiB.
		{name: "memory exactly fits", h: func(h *Host) { h.AllocMemBytes = 3584*MiB - 1280*MiB }},
		{name: "memory one byte short", h: func(h *Host) { h.AllocMemBytes = 3584*MiB - 1280*MiB + 1 }, want: "memory: needs 1280 MiB"},
		{name: "vm larger than host", vm: func(v *VM) { v.MemBytes = 4 * GiB }, want: "memory"},
		// 2 CPUs × 4.0 = 8 vCPUs.
		{name: "vcpus exactly fit", h: func(h *Host) { h.AllocVCPUs = 7 }},
		{name: "vcpus over ratio", h: func(h *Host) { h.AllocVCPUs = 8 }, want: "vCPUs: 8 allocated + 1 > 8"},
		{name: "storage missing", vm: func(v *VM) { v.Storage = []string{"nfs1", "san2"} }, want: "storage san2 missing"},
		{name: "network missing", vm: func(v *VM) { v.Networks = []string{"br9"} }, want: "network br9 missing"},
		{name: "new vm ignores cpu identity", h: func(h *Host) { h.CPUIDHash = "cpu-b"; h.TSCKHz = 3_000_000 }},
		{name: "migration same cpu", from: &from},
		{name: "migration accelerator differs", from: &from, h: func(h *Host) { h.Accel = "emu" }, want: "accelerator emu differs from the VM's host"},
		{name: "new vm ignores accelerator", h: func(h *Host) { h.Accel = "emu" }},
		{name: "migration cpuid differs", from: &from, h: func(h *Host) { h.CPUIDHash = "cpu-b" }, want: "CPU identity differs"},
		{name: "migration tsc within 250 ppm", from: &from, h: func(h *Host) { h.TSCKHz = 2_000_500 }},
		{name: "migration tsc 251 ppm", from: &from, h: func(h *Host) { h.TSCKHz = 2_000_502 }, want: "TSC 2000502 kHz is 251 ppm"},
		{name: "migration tsc unknown", from: &from, h: func(h *Host) { h.TSCKHz = 0 }, want: "TSC"},
		{name: "migration to itself", from: &Host{Name: "h", CPUIDHash: "cpu-a", TSCKHz: 2_000_000}, want: "current host"},
	}
	var p Policy
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h, v := host("h"), vm()
			if c.h != nil {
				c.h(&h)
			}
			if c.vm != nil {
				c.vm(&v)
			}
			why := p.Check(Request{VM: v, From: c.from}, h)
			got := strings.Join(why, "; ")
			switch {
			case c.want == "" && len(why) > 0:
				t.Fatalf("refused: %s", got)
			case c.want != "" && !strings.Contains(got, c.want):
				t.Fatalf("reasons %q, want %q", got, c.want)
			}
		})
	}
}

func TestRules(t *testing.T) {
	a, b, c := host("a"), host("b"), host("c")
	b.VMs = []string{"web2"}
	cases := []struct {
		name   string
		rule   Rule
		best   string
		reject []string // hosts refused
	}{
		{name: "must vm-host", rule: Rule{Name: "r", Kind: RuleVMHost, Must: true, VMs: []string{"vm1"}, Hosts: []string{"c"}}, best: "c", reject: []string{"a", "b"}},
		{name: "must anti-affinity", rule: Rule{Name: "r", Kind: RuleAntiAffinity, Must: true, VMs: []string{"vm1", "web2"}}, best: "a", reject: []string{"b"}},
		{name: "must affinity", rule: Rule{Name: "r", Kind: RuleAffinity, Must: true, VMs: []string{"vm1", "web2"}}, best: "b", reject: []string{"a", "c"}},
		{name: "should affinity wins over load", rule: Rule{Name: "r", Kind: RuleAffinity, VMs: []string{"vm1", "web2"}}, best: "b"},
		{name: "rule for other vms", rule: Rule{Name: "r", Kind: RuleVMHost, Must: true, VMs: []string{"x"}, Hosts: []string{"c"}}, best: "a"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b.AllocMemBytes = 1 * GiB // b is busier: without rules it ranks last
			res := Policy{}.Rank(Request{VM: vm(), Hosts: []Host{c, b, a}, Rules: []Rule{tc.rule}})
			if res.Best() != tc.best {
				t.Fatalf("best %q, want %q (%+v)", res.Best(), tc.best, res)
			}
			var rej []string
			for _, r := range res.Rejected {
				rej = append(rej, r.Host)
			}
			if strings.Join(rej, ",") != strings.Join(tc.reject, ",") {
				t.Fatalf("rejected %v, want %v", rej, tc.reject)
			}
		})
	}
}

func TestRankPrefersLessLoaded(t *testing.T) {
	a, b, c := host("a"), host("b"), host("c")
	a.AllocMemBytes = 2 * GiB
	b.AllocVCPUs = 2 // memory weighs 5×, vCPUs 1×
	c.AllocMemBytes = 512 * MiB
	res := Policy{}.Rank(Request{VM: vm(), Hosts: []Host{a, b, c}})
	var order []string
	for _, c := range res.Candidates {
		order = append(order, c.Host)
	}
	if got := strings.Join(order, ","); got != "b,c,a" {
		t.Fatalf("order %s, want b,c,a (%+v)", got, res.Candidates)
	}
	if res.Candidates[0].Score <= res.Candidates[2].Score {
		t.Fatalf("scores not decreasing: %+v", res.Candidates)
	}
	// Equal hosts tie; the name decides.
	res = Policy{}.Rank(Request{VM: vm(), Hosts: []Host{host("z"), host("y")}})
	if res.Best() != "y" || res.Candidates[0].Score != 1 {
		t.Fatalf("tie: %+v", res.Candidates)
	}
}

func TestNoHostError(t *testing.T) {
	a, b := host("a"), host("b")
	b.Networks = nil
	v := vm()
	v.Storage = []string{"san2"}
	res := Policy{}.Rank(Request{VM: v, Hosts: []Host{a, b}})
	err := res.Err("vm1")
	if err == nil {
		t.Fatal("placed a VM whose storage no host has")
	}
	want := "placement: no host can take vm vm1: a: storage san2 missing (the VM's disk is not reachable there); b: storage san2 missing (the VM's disk is not reachable there), network br0 missing"
	if err.Error() != want {
		t.Fatalf("error\n %s\nwant\n %s", err, want)
	}
	if err := (Result{}).Err("vm1"); !strings.Contains(err.Error(), "no hosts") {
		t.Fatalf("empty pool: %v", err)
	}
}

func TestTOPSIS(t *testing.T) {
	s := TOPSIS([][]float64{{0.2, 0.8, 0.5}}, []float64{1})
	if s[0] != 1 || s[1] != 0 || math.Abs(s[2]-0.5) > 1e-9 {
		t.Fatalf("one criterion: %v", s)
	}
	s = TOPSIS([][]float64{{0.5, 0.5}, {0.1, 0.9}}, []float64{1, 1})
	if s[0] != 1 || s[1] != 0 {
		t.Fatalf("tie on one criterion: %v", s)
	}
}

func TestPolicyValidate(t *testing.T) {
	if err := (Policy{}).Validate(); err != nil {
		t.Fatal(err)
	}
	if err := (Policy{VCPURatio: -1}).Validate(); err == nil {
		t.Fatal("negative ratio accepted")
	}
	if got := (Policy{}).Need(vm()); got != GiB+256*MiB {
		t.Fatalf("Need = %d", got)
	}
}
