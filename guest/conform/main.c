/*
 * main.c - the case table and the runner.
 *
 * Output on COM1, one line each (see internal/conformance/doc.go):
 *   CONFORM v1 cpus=<n>
 *   PASS <case>  |  FAIL <case>: <what was expected and what was seen>
 *   DONE pass=<p> fail=<f>
 * then power-off through port 0xF4.
 *
 * Every case runs on the BSP at CPL 0 under a catch point: an exception
 * nobody expected ends the case as FAIL with the vector, error code, RIP and
 * CR2, and the next case starts from restore_baseline().
 */
#include "conform.h"

extern const struct conf_case mode_cases[], paging_cases[], exc_cases[], smp_cases[], timer_cases[];

static const struct conf_case *const groups[] = {
	mode_cases, paging_cases, exc_cases, smp_cases, timer_cases,
};

static char fail_msg[256];
static bool failed;

void failf(const char *fmt, ...)
{
	va_list ap;

	if (failed)
		return;
	failed = true;
	va_start(ap, fmt);
	vsnprintf(fail_msg, sizeof(fail_msg), fmt, ap);
	va_end(ap);
}

bool case_failed(void) { return failed; }

static void call_case(void *fn)
{
	((void (*)(void))fn)();
}

void run_cases(void)
{
	u32 pass = 0, fail = 0;

	for (u32 g = 0; g < ARRAY_SIZE(groups); g++) {
		for (const struct conf_case *c = groups[g]; c->name; c++) {
			struct trap t;
			failed = false;
			restore_baseline();
			long v = run_guarded(call_case, (void *)c->fn, &t);
			restore_baseline();
			if (v != NO_TRAP) {
				char first[128];
				snprintf(first, sizeof(first), "%s", failed ? fail_msg : "");
				failed = false;
				failf("unexpected %s (vector %ld) err=0x%lx rip=0x%lx cs=0x%lx cr2=0x%lx%s%s",
				      vector_name(v), v, t.error, t.rip, t.cs, t.cr2,
				      first[0] ? "; before it: " : "", first);
			}
			if (failed) {
				say("FAIL %s: %s", c->name, fail_msg);
				fail++;
			} else {
				say("PASS %s", c->name);
				pass++;
			}
		}
	}
	say("DONE pass=%u fail=%u", pass, fail);
}
