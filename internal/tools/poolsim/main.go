// Command poolsim drives the controller's planning code — package
// placement (filters, TOPSIS) and package balance (imbalance, moves) — over
// an in-memory pool of thousands of hosts and tens of thousands of VMs with
// a fake clock and a bandwidth model, to show how the design behaves past
// one machine (results in docs/SCALE.md).
//
//	go run ./internal/tools/poolsim [--hosts 2000 --vms 20000 --seed 1]
//
// The pool: hosts of 32/64/96 CPUs and 256/512/768 GiB, half with 10 and
// half with 25 Gbit/s migration NICs, two CPU generations (a VM migrates
// only within its generation, as placement's CPUID filter says); VMs of
// 1-16 vCPUs and 1-64 GiB, CPU use 5-80 % of their vCPUs, dirty rates
// log-uniform 1-400 MB/s. The start is skewed: a tenth of the hosts
// ("hot") receive four times their share of VMs.
//
// It reports:
//
//   - plan time: the wall clock of one placement decision (Policy.Rank over
//     every host) and of balancing rounds (balance.MakePlan);
//   - drain: one host, then a tenth of the pool at once. The VMs are
//     ordered shortest predicted migration first (PLATFORM.md §6; the
//     controller's own drain planner lives in package controller and is not
//     importable, so this is a plain re-statement of its ordering), each
//     destination chosen by placement.Rank as it would be live, then the
//     migrations run on the fake clock under PLATFORM.md's slots (5 per
//     pool, 2 out and 2 in per host) and, to show what the pool-wide limit
//     costs, with per-host slots only;
//   - rebalance: from the skewed start to below the threshold, the moves
//     package balance plans and how long they take on the fake clock, one
//     per 60 s round (the automatic mode) or in parallel under the slots.
//
// Bandwidth model: a migration gets min(source NIC / out slots, destination
// NIC / in slots) — each slot's fair share of a saturated NIC — and takes
// balance.Predict's pre-copy time M / (B − D); a VM whose dirty rate D is
// at least its bandwidth B never converges and is reported as blocked.
package main

import (
	"container/heap"
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"sort"
	"time"

	"github.com/godwit-vmm/godwit/internal/controller/balance"
	"github.com/godwit-vmm/godwit/internal/controller/placement"
)

const gib = 1 << 30

func main() {
	nHosts := flag.Int("hosts", 2000, "hosts in the pool")
	nVMs := flag.Int("vms", 20000, "VMs in the pool")
	seed := flag.Uint64("seed", 1, "random seed")
	targetCV := flag.Float64("target-cv", 0.10, "rebalance until the coefficient of variation of host loads is below this")
	window := flag.Int("window", 16, "rebalance search: the VMs of the WINDOW most loaded hosts onto the WINDOW least loaded")
	exhaustive := flag.Bool("exhaustive", true, "also time one exhaustive round (every VM onto every host)")
	flag.Parse()
	if *nHosts < 2 || *nVMs < 1 {
		fmt.Fprintln(os.Stderr, "poolsim: want at least 2 hosts and 1 VM")
		os.Exit(2)
	}
	s := newSim(*nHosts, *nVMs, *seed)
	s.report(*targetCV, *window, *exhaustive)
}

// sim is the in-memory pool.
type sim struct {
	pol   placement.Policy
	hosts []placement.Host
	nic   []float64 // bytes/s
	vms   []balance.VM
	rng   *rand.Rand
	t0    time.Time
}

func newSim(nh, nv int, seed uint64) *sim {
	s := &sim{pol: placement.Policy{}.WithDefaults(), rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		t0: time.Date(2026, 4, 1, 0, 0, 0, 0, time.UTC)}
	cpus := []int{32, 64, 96}
	mems := []uint64{256 * gib, 512 * gib, 768 * gib}
	for i := range nh {
		k := s.rng.IntN(3)
		gen := "gen1"
		if i%2 == 1 {
			gen = "gen2"
		}
		nic := 10e9 / 8
		if s.rng.IntN(2) == 1 {
			nic = 25e9 / 8
		}
		s.hosts = append(s.hosts, placement.Host{Name: fmt.Sprintf("h%04d", i), Alive: true, State: "active",
			CPUIDHash: gen, TSCKHz: 2_400_000, CPUs: cpus[k], MemBytes: mems[k],
			Storage: []string{"ceph"}, Networks: []string{"vlan10"}})
		s.nic = append(s.nic, nic)
	}
	vcpus := []int{1, 2, 2, 4, 4, 4, 8, 8, 16}
	memg := []uint64{1, 2, 4, 4, 8, 8, 16, 16, 32, 64}
	hot := max(nh/10, 1)
	weight := func(i int) float64 {
		if i < hot {
			return 4
		}
		return 1
	}
	var total float64
	for i := range nh {
		total += weight(i)
	}
	for j := range nv {
		v := balance.VM{VM: placement.VM{Name: fmt.Sprintf("vm%05d", j), VCPUs: vcpus[s.rng.IntN(len(vcpus))],
			MemBytes: memg[s.rng.IntN(len(memg))] * gib, Storage: []string{"ceph"}, Networks: []string{"vlan10"}}}
		v.CPU = float64(v.VCPUs) * (0.05 + 0.75*s.rng.Float64())
		v.DirtyRate = math.Exp(math.Log(1e6) + s.rng.Float64()*(math.Log(400e6)-math.Log(1e6)))
		// Weighted random host with room (capacity test only: Rank over
		// every host for each of tens of thousands of VMs is what the
		// report measures, not how the start is built).
		for try := 0; ; try++ {
			x := s.rng.Float64() * total
			i := 0
			if x < float64(hot)*4 {
				i = int(x / 4)
			} else {
				i = hot + int(x-float64(hot)*4)
			}
			i = min(i, nh-1)
			if s.fits(v, i) || try > 50 {
				s.place(v, i)
				break
			}
		}
	}
	return s
}

func (s *sim) fits(v balance.VM, i int) bool {
	h := s.hosts[i]
	return float64(h.AllocMemBytes+s.pol.Need(v.VM)) <= float64(h.MemBytes)-float64(s.pol.HostReserveBytes) &&
		float64(h.AllocVCPUs+v.VCPUs) <= float64(h.CPUs)*s.pol.VCPURatio
}

func (s *sim) place(v balance.VM, i int) {
	h := &s.hosts[i]
	h.AllocMemBytes += s.pol.Need(v.VM)
	h.AllocVCPUs += v.VCPUs
	h.VMs = append(h.VMs, v.Name)
	v.Host = h.Name
	s.vms = append(s.vms, v)
}

func (s *sim) pool() balance.Pool { return balance.Pool{Hosts: s.hosts, VMs: s.vms} }

// loads returns the hosts' loads as package balance computes them.
func (s *sim) loads() (imb, cv float64) {
	p := balance.MakePlan(balance.Config{Level: 1, Policy: s.pol}, s.pool(), s.t0, 0)
	var ls []float64
	for _, l := range p.Loads {
		ls = append(ls, l.Load)
	}
	return p.Imbalance, cvOf(ls)
}

func cvOf(ls []float64) float64 {
	var s1, s2 float64
	for _, l := range ls {
		s1 += l
		s2 += l * l
	}
	n := float64(len(ls))
	mu := s1 / n
	return math.Sqrt(max(s2/n-mu*mu, 0)) / mu
}

func (s *sim) report(targetCV float64, window int, exhaustive bool) {
	nh, nv := len(s.hosts), len(s.vms)
	imb, cv := s.loads()
	fmt.Printf("pool: %d hosts, %d VMs (seed-determined sizes), skewed start: %d hot hosts with 4× their share\n", nh, nv, max(nh/10, 1))
	fmt.Printf("start: imbalance I = %.4f (CV %.3f; I = CV/sqrt(N−1), so CV %.2f ⇔ I 0.3)\n\n", imb, cv, 0.3*math.Sqrt(float64(nh-1)))

	// Placement: one decision over every host.
	vm := s.vms[0].VM
	vm.Name = "new-vm"
	req := placement.Request{VM: vm, Hosts: s.hosts}
	const reps = 5
	began := time.Now()
	var res placement.Result
	for range reps {
		res = s.pol.Rank(req)
	}
	rankT := time.Since(began) / reps
	fmt.Printf("placement: one Policy.Rank over %d hosts: %s (%d candidates)\n", nh, rankT.Round(time.Microsecond), len(res.Candidates))

	// Balancing, literal PLATFORM.md policy (level 3, per-move gain ≥ 10 %).
	if exhaustive {
		began = time.Now()
		p := balance.MakePlan(balance.Config{Policy: s.pol}, s.pool(), s.t0, 1)
		fmt.Printf("balance, level 3 as specified, exhaustive: one round %s, %d (VM, host) pairs scored, %d moves: %s\n",
			time.Since(began).Round(time.Millisecond), p.Evaluated, len(p.Moves), p.Stop)
		began = time.Now()
		p = balance.MakePlan(balance.Config{Policy: s.pol, Threshold: 1e-9}, s.pool(), s.t0, 1)
		fmt.Printf("  …with the threshold forced to 0: one round %s, %d pairs, %d moves: %s\n",
			time.Since(began).Round(time.Millisecond), p.Evaluated, len(p.Moves), p.Stop)
	}

	s.drains()
	s.rebalance(targetCV, window)
}

// job is one migration on the fake clock.
type job struct {
	vm       int
	src, dst int
	dur      time.Duration
}

// drains plans and runs the drain of one host, then of a tenth of the pool.
func (s *sim) drains() {
	byName := map[string]int{}
	for i, h := range s.hosts {
		byName[h.Name] = i
	}
	// The most loaded host (by VM count) and the tenth with most VMs.
	order := make([]int, len(s.hosts))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool { return len(s.hosts[order[a]].VMs) > len(s.hosts[order[b]].VMs) })
	for _, n := range []int{1, max(len(s.hosts)/10, 1)} {
		drain := order[:n]
		hosts := slices.Clone(s.hosts)
		for i := range hosts {
			hosts[i].VMs = slices.Clone(hosts[i].VMs)
		}
		draining := map[int]bool{}
		for _, i := range drain {
			hosts[i].State = "draining"
			draining[i] = true
		}
		type item struct {
			vm  int
			est time.Duration
		}
		var queue []item
		for j, v := range s.vms {
			if draining[byName[v.Host]] {
				t, _ := balance.Predict(v.MemBytes, v.DirtyRate, s.nic[byName[v.Host]]/2)
				if t == 0 {
					t = time.Duration(math.MaxInt64)
				}
				queue = append(queue, item{j, t})
			}
		}
		sort.SliceStable(queue, func(a, b int) bool { return queue[a].est < queue[b].est })
		var jobs []job
		blocked, noHost := 0, 0
		var ranks time.Duration
		var sum time.Duration
		began := time.Now()
		for _, it := range queue {
			v := s.vms[it.vm]
			src := byName[v.Host]
			from := hosts[src]
			t0 := time.Now()
			r := s.pol.Rank(placement.Request{VM: v.VM, From: &from, Hosts: hosts})
			ranks += time.Since(t0)
			if r.Best() == "" {
				noHost++
				continue
			}
			dst := byName[r.Best()]
			bw := min(s.nic[src]/2, s.nic[dst]/2)
			dur, ok := balance.Predict(v.MemBytes, v.DirtyRate, bw)
			if !ok {
				blocked++
				continue
			}
			h := &hosts[dst]
			h.AllocMemBytes += s.pol.Need(v.VM)
			h.AllocVCPUs += v.VCPUs
			h.VMs = append(h.VMs, v.Name)
			jobs = append(jobs, job{vm: it.vm, src: src, dst: dst, dur: dur})
			sum += dur
		}
		plan := time.Since(began)
		what := "one host"
		if n > 1 {
			what = fmt.Sprintf("%d hosts (10 %%)", n)
		}
		fmt.Printf("\ndrain of %s: %d VMs; plan %s (%d Rank calls, %s each); %d cannot converge, %d have no host\n",
			what, len(queue), plan.Round(time.Millisecond), len(queue), (ranks / time.Duration(max(len(queue), 1))).Round(time.Microsecond), blocked, noHost)
		fmt.Printf("  sum of single migrations %s\n", fmtDur(sum))
		fmt.Printf("  slots 5 per pool, 2 out/2 in per host: %s\n", fmtDur(run(jobs, 5, 2, 2, len(s.hosts))))
		fmt.Printf("  slots 2 out/2 in per host only:        %s\n", fmtDur(run(jobs, 0, 2, 2, len(s.hosts))))
	}
}

// rebalance plans balancing moves from the skewed start until the CV of the
// loads is below targetCV, then runs them on the fake clock.
func (s *sim) rebalance(targetCV float64, window int) {
	nh := len(s.hosts)
	thr := targetCV / math.Sqrt(float64(nh-1))
	cfg := balance.Config{Level: 3, Threshold: thr, Policy: s.pol, BatchGain: true, MaxSources: window, MaxTargets: window,
		Bandwidth: 10e9 / 8 / 2}
	byName := map[string]int{}
	for i, h := range s.hosts {
		byName[h.Name] = i
	}
	pool := s.pool()
	pool.Hosts = slices.Clone(pool.Hosts)
	for i := range pool.Hosts {
		pool.Hosts[i].VMs = slices.Clone(pool.Hosts[i].VMs)
	}
	pool.VMs = slices.Clone(pool.VMs)
	fmt.Printf("\nrebalance to CV < %.2f (threshold I < %.5f), batch gain, search window %d×%d hosts:\n", targetCV, thr, window, window)
	began := time.Now()
	// Plans of up to 500 moves at a time, applied to the pool between
	// them, as successive controller rounds would.
	var moves []balance.Move
	var evals int
	var rounds int
	var stop string
	var first time.Duration
	now := s.t0
	for {
		t := time.Now()
		p := balance.MakePlan(cfg, pool, now, 500)
		if rounds == 0 {
			first = time.Since(t)
		}
		rounds++
		evals += p.Evaluated
		stop = p.Stop
		if len(p.Moves) == 0 {
			break
		}
		for _, m := range p.Moves {
			j := slices.IndexFunc(pool.VMs, func(v balance.VM) bool { return v.Name == m.VM })
			v := &pool.VMs[j]
			src, dst := &pool.Hosts[byName[m.From]], &pool.Hosts[byName[m.To]]
			need := s.pol.Need(v.VM)
			src.AllocMemBytes -= need
			src.AllocVCPUs -= v.VCPUs
			src.VMs = slices.DeleteFunc(src.VMs, func(n string) bool { return n == v.Name })
			dst.AllocMemBytes += need
			dst.AllocVCPUs += v.VCPUs
			dst.VMs = append(dst.VMs, v.Name)
			v.Host = m.To
			mm := m
			v.LastMove = &mm
		}
		moves = append(moves, p.Moves...)
		if p.Final <= thr {
			break
		}
		now = now.Add(balance.DefaultCoolDown + time.Minute) // the next plan, once the cool-downs are over
	}
	plan := time.Since(began)
	var ls []float64
	end := balance.MakePlan(balance.Config{Level: 1, Policy: s.pol}, pool, s.t0, 0)
	for _, l := range end.Loads {
		ls = append(ls, l.Load)
	}
	fmt.Printf("  %d moves in %d plans; plan time %s (first plan of up to 500 moves %s), %d pairs scored\n",
		len(moves), rounds, plan.Round(time.Millisecond), first.Round(time.Millisecond), evals)
	fmt.Printf("  end: I = %.5f, CV %.3f (%s)\n", end.Imbalance, cvOf(ls), stop)
	var jobs []job
	var sum time.Duration
	for _, m := range moves {
		src, dst := byName[m.From], byName[m.To]
		j := slices.IndexFunc(s.vms, func(v balance.VM) bool { return v.Name == m.VM })
		v := s.vms[j]
		dur, _ := balance.Predict(v.MemBytes, v.DirtyRate, min(s.nic[src]/2, s.nic[dst]/2))
		jobs = append(jobs, job{vm: j, src: src, dst: dst, dur: dur})
		sum += dur
	}
	fmt.Printf("  automatic mode as specified (one move per 60 s round, one in flight): %s\n", fmtDur(time.Duration(len(moves))*time.Minute))
	fmt.Printf("  sum of the migrations %s; in parallel, 5 per pool: %s; 2 out/2 in per host only: %s\n",
		fmtDur(sum), fmtDur(run(jobs, 5, 2, 2, nh)), fmtDur(run(jobs, 0, 2, 2, nh)))
}

// run executes jobs in order on a fake clock: a job starts as soon as a
// pool slot (cluster; 0: unlimited), an out slot on its source and an in
// slot on its destination are free, earlier jobs first (a later job may
// overtake one that waits for a busy host). It returns the makespan.
func run(jobs []job, cluster, out, in, nh int) time.Duration {
	var now time.Duration
	busyOut, busyIn := make([]int, nh), make([]int, nh)
	running := &finishHeap{}
	pending := slices.Clone(jobs)
	active := 0
	for len(pending) > 0 || running.Len() > 0 {
		rest := pending[:0]
		for _, j := range pending {
			if (cluster == 0 || active < cluster) && busyOut[j.src] < out && busyIn[j.dst] < in {
				busyOut[j.src]++
				busyIn[j.dst]++
				active++
				heap.Push(running, fin{at: now + j.dur, j: j})
			} else {
				rest = append(rest, j)
			}
		}
		pending = rest
		if running.Len() == 0 {
			break
		}
		f := heap.Pop(running).(fin)
		now = f.at
		busyOut[f.j.src]--
		busyIn[f.j.dst]--
		active--
		for running.Len() > 0 && (*running)[0].at == now {
			f := heap.Pop(running).(fin)
			busyOut[f.j.src]--
			busyIn[f.j.dst]--
			active--
		}
	}
	return now
}

type fin struct {
	at time.Duration
	j  job
}

type finishHeap []fin

func (h finishHeap) Len() int           { return len(h) }
func (h finishHeap) Less(i, j int) bool { return h[i].at < h[j].at }
func (h finishHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *finishHeap) Push(x any)        { *h = append(*h, x.(fin)) }
func (h *finishHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

func fmtDur(d time.Duration) string {
	switch {
	case d >= time.Hour:
		return fmt.Sprintf("%.1f h", d.Hours())
	case d >= time.Minute:
		return fmt.Sprintf("%.1f min", d.Minutes())
	}
	return fmt.Sprintf("%.1f s", d.Seconds())
}
