// Package wire defines the bytes of a Godwit live-migration session and
// nothing else: how a connection opens, how frames are laid out, what each
// control message carries, how guest pages travel, and the CRC32C table of
// verify mode. It makes no decisions (the engine and the pre-copy policy
// do) and owns no goroutines.
//
// Who may import: the migration engine (internal/migration) and its tests,
// and tools that inspect migration streams. It depends on the standard
// library and golang.org/x/sys only.
//
// # Connections
//
// A session is one control connection plus N data connections (1 ≤ N ≤
// [MaxStreams]), all TCP, all opened by the source. Every connection starts
// with a HELLO written by the source, 32 bytes, little-endian:
//
//	 0               8              12                              28  29  30  31  32
//	+---------------+---------------+-------------------------------+---+---+---+---+
//	| magic         | version u32   | session id [16]byte           |rol|idx|cnt|rsv|
//	| "GODWITMG"    | (= 1)         | same on every connection      |u8 |u8 |u8 |=0 |
//	+---------------+---------------+-------------------------------+---+---+---+---+
//
// role is 0 for the control connection and 1 for a data connection; idx is
// the data stream's index (0..cnt-1; 0 on the control connection); cnt is N,
// the number of data streams of the session. The reserved byte must be 0.
// A reader rejects a wrong magic ("wire: not a Godwit migration stream"), a
// version it does not speak (naming both versions), and out-of-range fields.
// The destination does not answer HELLO; its first reply is a control frame.
//
// # Frames
//
// After HELLO every connection carries frames: a 16-byte header, then
// exactly length payload bytes.
//
//	 0       2       4               8                               16
//	+-------+-------+---------------+-------------------------------+----------
//	| type  | flags | iteration     | length u64                    | payload…
//	| u16   | u16=0 | u32           | (bytes after the header)      |
//	+-------+-------+---------------+-------------------------------+----------
//
// No flags are defined; a reader rejects non-zero flags, unknown types, and
// a length above the type's limit ([Type.MaxPayload]) before reading any
// payload. iteration is the pre-copy round a frame belongs to (0 is the
// first full pass); frames outside rounds carry the current round number.
//
// # Control messages
//
// Control frames travel on the control connection only. Their payloads:
//
//	CONFIG        JSON [Config]: VM shape, CPUID, MSR list, XSAVE size, TSC kHz
//	ACK           the destination accepts CONFIG (JSON [Accept] if CONFIG asked for features, else empty) or VERIFY (empty)
//	ERROR         JSON {version, reason} ([EncodeReason]): the destination refuses CONFIG
//	ITER_BEGIN    empty: round <iteration> starts
//	ITER_END      empty: the source has queued every page of the round
//	ITER_DONE     empty: the destination has stored every page of the round
//	STATE         opaque bytes: vCPU, VM and device state (the engine's format)
//	STATE_OK      empty: state loaded, VM not running
//	VERIFY        binary: count u32, then count × CRC32C u32 (see below)
//	RX            binary: count u32, then count × (length u32, packet bytes): guest-bound packets (late-rx)
//	COMMIT        empty: the destination must start the VM now
//	COMMITTED     empty: the destination's vCPUs run
//	ABORT         JSON {version, reason}: either side gives up (never after COMMIT)
//	PROGRESS      JSON [Progress]: source → destination, informative
//	QUERY         empty: did you commit? (first frame of a new control connection)
//	QUERY_REPLY   JSON [QueryReply]
//
// JSON payloads carry a "version" field that must be present and equal to
// [MessageVersion]; unknown fields are ignored so that fields can be added
// without a version change. A change old readers cannot ignore bumps the
// message version.
//
// The control sequence (source → destination unless marked ←):
//
//	HELLO → CONFIG → ← ACK | ← ERROR
//	{ ITER_BEGIN(i) … PAGES(i)… DATA_END(i) on each data stream … ITER_END(i) → ← ITER_DONE(i) }*
//	STATE → ← STATE_OK → [VERIFY → ← ACK | ← ABORT] → [RX] → COMMIT → ← COMMITTED
//
// Features extend the sequence without a version change: CONFIG lists
// those the source can use ([Config.Features]), the ACK grants a subset,
// and the source uses only what was granted. With [FeatureLateRX] the
// packets that reached the paused source (each with its virtio-net
// header) travel in one RX frame, sent with COMMIT and as late as
// possible, rather than inside STATE; the destination delivers them to
// the guest before anything its own network backend reads.
//
// ABORT may be sent by either side at any point before COMMIT. After COMMIT
// the source never resumes on its own: if COMMITTED is lost it opens a new
// control connection (HELLO with the same session id), sends QUERY and
// acts on the [QueryReply].
//
// # Data streams and PAGES
//
// Data connections carry only PAGES and DATA_END frames. A PAGES payload is
// a run table followed by the bytes of every DATA run, in table order:
//
//	+----------+--------------------------------------------+---------------------+
//	| runs u32 | runs × run entry (16 bytes each)           | DATA run bytes…     |
//	+----------+--------------------------------------------+---------------------+
//
//	run entry:  0         8            12        13          16
//	            +---------+------------+---------+-----------+
//	            | gpa u64 | npages u32 | kind u8 | pad [3]=0 |
//	            +---------+------------+---------+-----------+
//
// The DATA run bytes are npages×4096 bytes per DATA run, runs in table order;
// kind is 0 (DATA: npages×4096 bytes follow) or 1 (ZERO: the pages are all
// zero and no bytes follow). gpa is page aligned; runs are not empty. The
// payload length must equal 4 + 16×runs + 4096×(DATA pages) exactly, with
// at most [MaxRuns] runs and [MaxDataPages] DATA pages per frame.
//
// DATA_END (empty) closes round <iteration> on one data stream: the
// destination answers ITER_END(i) with ITER_DONE(i) once it has read ITER_END
// on the control connection and DATA_END(i) on every data stream.
//
// A page always travels on stream [StreamFor](gpa, N) = (gpa >> 21) mod N, so
// that a newer copy of a page never overtakes an older one. With N > 1 a
// sender therefore splits runs at 2 MiB boundaries.
//
// # Verify
//
// In verify mode the paused source computes a checksum of every 2 MiB chunk
// of guest RAM, region by region in address order, the last chunk of a
// region possibly shorter: the CRC32C (Castagnoli) of the little-endian
// CRC32Cs of the chunk's 4 KiB pages ([ChecksumRAM]; a never-touched page
// is hashed as zeros without being read), and sends the table as VERIFY. The destination computes its own table after loading the last
// pages and compares ([CompareChecksums]) before it may accept COMMIT.
package wire
