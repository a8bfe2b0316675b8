package store

import (
	"context"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// HostEventKind says what happened to a host.
type HostEventKind string

// Host events.
const (
	HostUp           HostEventKind = "up"    // hosts/<h>/alive written (registration)
	HostLost         HostEventKind = "lost"  // hosts/<h>/alive deleted: lease expired or revoked
	HostStateChanged HostEventKind = "state" // hosts/<h>/state written
)

// HostEvent is one change seen by WatchHosts. A final event with Err set is
// sent before the channel closes for any reason but the caller's ctx (for
// example ErrCompacted: the caller must List again and watch from there).
type HostEvent struct {
	Host  string
	Kind  HostEventKind
	Alive *HostAlive // HostUp: the new value; HostLost: the value deleted, if known
	State *HostState // HostStateChanged
	Rev   int64      // revision of the change
	Err   error
}

// WatchHosts streams host arrivals, losses and state changes from revision
// fromRev (0: from now). To act on a consistent view, ListHosts first and
// watch from its revision + 1. The channel closes when ctx ends.
func (s *Store) WatchHosts(ctx context.Context, fromRev int64) <-chan HostEvent {
	out := make(chan HostEvent, 16)
	opts := []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithPrevKV()}
	if fromRev > 0 {
		opts = append(opts, clientv3.WithRev(fromRev))
	}
	wch := s.cli.Watch(clientv3.WithRequireLeader(ctx), HostsPrefix, opts...)
	go func() {
		defer close(out)
		for wr := range wch {
			if err := wr.Err(); err != nil {
				sendHost(ctx, out, HostEvent{Err: fmt.Errorf("store: watch hosts: %w", err)})
				return
			}
			for _, ev := range wr.Events {
				key := string(ev.Kv.Key)
				name, leaf, ok := splitKey(HostsPrefix, key)
				if !ok {
					continue
				}
				e := HostEvent{Host: name, Rev: ev.Kv.ModRevision}
				switch {
				case leaf == "alive" && ev.Type == clientv3.EventTypePut:
					e.Kind, e.Alive = HostUp, new(HostAlive)
					if err := decode(key, ev.Kv.Value, e.Alive); err != nil {
						e.Err = err
					}
				case leaf == "alive" && ev.Type == clientv3.EventTypeDelete:
					e.Kind = HostLost
					if ev.PrevKv != nil {
						e.Alive = new(HostAlive)
						if err := decode(key, ev.PrevKv.Value, e.Alive); err != nil {
							e.Alive = nil
						}
					}
				case leaf == "state" && ev.Type == clientv3.EventTypePut:
					e.Kind, e.State = HostStateChanged, new(HostState)
					if err := decode(key, ev.Kv.Value, e.State); err != nil {
						e.Err = err
					}
				default:
					continue
				}
				if !sendHost(ctx, out, e) {
					return
				}
			}
		}
		if ctx.Err() == nil {
			sendHost(ctx, out, HostEvent{Err: fmt.Errorf("store: watch hosts: stream closed (no etcd leader?)")})
		}
	}()
	return out
}

func sendHost(ctx context.Context, out chan<- HostEvent, e HostEvent) bool {
	select {
	case out <- e:
		return true
	case <-ctx.Done():
		return false
	}
}

// OwnerEvent is one change of a VM's owner key, seen by WatchOwners.
type OwnerEvent struct {
	VM string
	// Owner is the new owner, nil when the key was deleted (lease expiry,
	// release). Prev is the owner before the change, when known.
	Owner *Owner
	Prev  *Owner
	// Rev is the change's revision: for a put, the new fencing epoch.
	Rev int64
	Err error
}

// WatchOwners streams changes of every VM's owner key from fromRev (0: from
// now). Same contract as WatchHosts.
func (s *Store) WatchOwners(ctx context.Context, fromRev int64) <-chan OwnerEvent {
	out := make(chan OwnerEvent, 16)
	opts := []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithPrevKV()}
	if fromRev > 0 {
		opts = append(opts, clientv3.WithRev(fromRev))
	}
	wch := s.cli.Watch(clientv3.WithRequireLeader(ctx), VMsPrefix, opts...)
	send := func(e OwnerEvent) bool {
		select {
		case out <- e:
			return true
		case <-ctx.Done():
			return false
		}
	}
	go func() {
		defer close(out)
		for wr := range wch {
			if err := wr.Err(); err != nil {
				send(OwnerEvent{Err: fmt.Errorf("store: watch owners: %w", err)})
				return
			}
			for _, ev := range wr.Events {
				key := string(ev.Kv.Key)
				name, leaf, ok := splitKey(VMsPrefix, key)
				if !ok || leaf != "owner" {
					continue
				}
				e := OwnerEvent{VM: name, Rev: ev.Kv.ModRevision}
				if ev.Type == clientv3.EventTypePut {
					e.Owner = new(Owner)
					if err := decode(key, ev.Kv.Value, e.Owner); err != nil {
						e.Err = err
					}
				}
				if ev.PrevKv != nil {
					p := new(Owner)
					if decode(key, ev.PrevKv.Value, p) == nil {
						e.Prev = p
					}
				}
				if !send(e) {
					return
				}
			}
		}
		if ctx.Err() == nil {
			send(OwnerEvent{Err: fmt.Errorf("store: watch owners: stream closed (no etcd leader?)")})
		}
	}()
	return out
}
