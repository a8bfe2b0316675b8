// Package netlab builds small test networks out of Linux network
// namespaces, a bridge and veth pairs, so that tests, the demo and the
// benchmarks exercise real TAPs, bridges and TCP without a packet leaving
// the machine. Every object it creates carries the lab's prefix and is
// removed by Close, by name.
//
// The shape:
//
//	netns <p>-a (host A)      netns <p>-b (host B)      netns <p>-c (client)
//	VMM --tap-- guest         VMM --tap-- guest         10.<n>.0.100
//	     |  veth <p>a             |  veth <p>b              |  veth <p>c
//	     +-----------+------------+-------------+-----------+
//	                 bridge br0 in netns <p>-net ("the same network")
//
// Each host namespace has its own bridge "gwbr" that joins its TAPs to the
// shared segment through its veth (as a hypervisor host's bridge joins VM
// ports to its uplink), and a migration address 10.<n>.1.<k> on a second
// veth pair so that migration traffic runs host to host over real TCP.
//
// Who may import: tests, the demo and benchmarks. It shells out to ip(8).
package netlab

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os/exec"
	"strings"
)

// Lab is one test network.
type Lab struct {
	Prefix string
	// Subnet is the guest network 10.<n>.0.0/24; MigNet the hosts'
	// migration network 10.<n>.1.0/24.
	n      int
	hosts  []*Host
	Client *Client
	nsList []string
}

// Host is a namespace that runs VMMs.
type Host struct {
	Name    string     // namespace name
	Bridge  string     // bridge inside it that TAPs join
	MigAddr netip.Addr // address for migration traffic
}

// Client is the namespace that talks to guests.
type Client struct {
	Name string
	Addr netip.Addr
}

// ip runs ip(8) with args.
func ip(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// InNS runs ip(8) args inside namespace ns.
func InNS(ns string, args ...string) error {
	return ip(append([]string{"netns", "exec", ns, "ip"}, args...)...)
}

// New creates a lab with the given number of hosts (names <prefix>-a, -b,
// …) and one client. prefix "" picks a random one; keep it short (interface
// names hold 15 characters).
func New(prefix string, hosts int) (_ *Lab, err error) {
	if prefix == "" {
		b := make([]byte, 2)
		rand.Read(b)
		prefix = "gw" + hex.EncodeToString(b)
	}
	if len(prefix) > 8 || hosts < 1 || hosts > 8 {
		return nil, errors.New("netlab: prefix of at most 8 characters and 1 to 8 hosts")
	}
	n := 64 + int(prefix[len(prefix)-1])%64 // second octet, 64..127
	l := &Lab{Prefix: prefix, n: n}
	defer func() {
		if err != nil {
			l.Close()
		}
	}()
	core := prefix + "-net"
	if err := l.addNS(core); err != nil {
		return nil, err
	}
	steps := [][]string{
		{"link", "add", "br0", "type", "bridge"},
		{"link", "set", "br0", "up"},
		{"link", "add", "mig0", "type", "bridge"},
		{"link", "set", "mig0", "up"},
	}
	for _, s := range steps {
		if err := InNS(core, s...); err != nil {
			return nil, err
		}
	}
	for i := range hosts {
		name := fmt.Sprintf("%s-%c", prefix, 'a'+i)
		if err := l.addNS(name); err != nil {
			return nil, err
		}
		h := &Host{Name: name, Bridge: "gwbr", MigAddr: netip.AddrFrom4([4]byte{10, byte(n), 1, byte(1 + i)})}
		up := fmt.Sprintf("%s%c", prefix, 'a'+i)   // veth on the guest segment
		mig := fmt.Sprintf("%sm%c", prefix, 'a'+i) // veth on the migration network
		if err := l.veth(name, up, "uplink", core, "br0"); err != nil {
			return nil, err
		}
		if err := l.veth(name, mig, "mig", core, "mig0"); err != nil {
			return nil, err
		}
		for _, s := range [][]string{
			{"link", "add", h.Bridge, "type", "bridge"},
			{"link", "set", "uplink", "master", h.Bridge},
			{"link", "set", h.Bridge, "up"},
			{"addr", "add", h.MigAddr.String() + "/24", "dev", "mig"},
		} {
			if err := InNS(name, s...); err != nil {
				return nil, err
			}
		}
		l.hosts = append(l.hosts, h)
	}
	// "-cl", not "-c": host 3 is "-c".
	c := &Client{Name: prefix + "-cl", Addr: netip.AddrFrom4([4]byte{10, byte(n), 0, 100})}
	if err := l.addNS(c.Name); err != nil {
		return nil, err
	}
	if err := l.veth(c.Name, prefix+"cl", "eth0", core, "br0"); err != nil {
		return nil, err
	}
	if err := InNS(c.Name, "addr", "add", c.Addr.String()+"/24", "dev", "eth0"); err != nil {
		return nil, err
	}
	l.Client = c
	return l, nil
}

func (l *Lab) addNS(name string) error {
	if err := ip("netns", "add", name); err != nil {
		return err
	}
	l.nsList = append(l.nsList, name)
	return InNS(name, "link", "set", "lo", "up")
}

// veth makes a veth pair: inner end named in (renamed to inName) in
// namespace ns, outer end in namespace core attached to bridge br.
func (l *Lab) veth(ns, out, inName, core, br string) error {
	tmp := out + "i"
	steps := [][]string{
		{"link", "add", out, "type", "veth", "peer", "name", tmp},
		{"link", "set", tmp, "netns", ns},
		{"link", "set", out, "netns", core},
	}
	for _, s := range steps {
		if err := ip(s...); err != nil {
			return err
		}
	}
	if err := InNS(ns, "link", "set", tmp, "name", inName); err != nil {
		return err
	}
	if err := InNS(ns, "link", "set", inName, "up"); err != nil {
		return err
	}
	if err := InNS(core, "link", "set", out, "master", br); err != nil {
		return err
	}
	return InNS(core, "link", "set", out, "up")
}

// Hosts returns the lab's hosts.
func (l *Lab) Hosts() []*Host { return l.hosts }

// GuestAddr returns the k-th guest address on the guest segment.
func (l *Lab) GuestAddr(k int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, byte(l.n), 0, byte(10 + k)})
}

// CoreNS is the namespace holding the shared bridge br0.
func (l *Lab) CoreNS() string { return l.Prefix + "-net" }

// AttachTAP puts a TAP that a VMM created in host h on h's bridge.
func (h *Host) AttachTAP(tap string) error {
	return InNS(h.Name, "link", "set", tap, "master", h.Bridge)
}

// Command returns a command that runs inside host h's namespace.
func (h *Host) Command(name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", h.Name, name}, args...)...)
}

// Close deletes every namespace the lab made; their interfaces go with
// them.
func (l *Lab) Close() error {
	var errs []error
	for i := len(l.nsList) - 1; i >= 0; i-- {
		if err := ip("netns", "del", l.nsList[i]); err != nil {
			errs = append(errs, err)
		}
	}
	l.nsList = nil
	return errors.Join(errs...)
}
