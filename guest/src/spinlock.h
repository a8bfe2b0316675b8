/*
 * spinlock.h - test-and-set spinlock built on xchg (implicitly locked,
 * supported by the KVM emulator). The _irqsave variants disable local
 * interrupts while the lock is held, so an interrupt handler on the same
 * CPU can never spin on a lock its own interrupted context holds.
 */
#ifndef GUEST_SPINLOCK_H
#define GUEST_SPINLOCK_H

#include "arch.h"

typedef struct {
	volatile u32 locked;
} spinlock_t;

static inline void spin_lock(spinlock_t *l)
{
	while (__atomic_exchange_n(&l->locked, 1, __ATOMIC_ACQUIRE))
		while (l->locked)
			cpu_relax();
}

static inline void spin_unlock(spinlock_t *l)
{
	__atomic_store_n(&l->locked, 0, __ATOMIC_RELEASE);
}

static inline u64 spin_lock_irqsave(spinlock_t *l)
{
	u64 flags = irq_save();
	spin_lock(l);
	return flags;
}

static inline void spin_unlock_irqrestore(spinlock_t *l, u64 flags)
{
	spin_unlock(l);
	irq_restore(flags);
}

#endif
