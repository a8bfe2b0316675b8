/*
 * blk.h - virtio-blk driver and the BLKW/BLKR/BLKV test commands.
 */
#ifndef GUEST_BLK_H
#define GUEST_BLK_H

#include "arch.h"
#include "pci.h"

bool blk_probe(const struct pci_dev *pci);	/* 1af4:1001 */
bool blk_present(void);
void blk_poll(void);

/* Commands; args is the text after the command word. */
void cmd_blkw(const char *args);
void cmd_blkr(const char *args);
void cmd_blkv(const char *args);

/* Word w (0..63) of sector s for seed (documented in PROTOCOL.md). */
u64 blk_pattern_word(u64 seed, u64 sector, u32 w);

#endif
