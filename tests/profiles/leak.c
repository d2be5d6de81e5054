/* Ground truth for the heap profile (tests/profiles_e2e.rs): leaks 64 KiB every 100 ms from
 * leak_buffer() and churns 200 malloc/free pairs per 100 ms from churn(), for argv[1] seconds.
 * Built -O2 without frame pointers, as distributions build. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void *volatile keep;

__attribute__((noinline)) void *leak_buffer(void)
{
	void *p = malloc(64 * 1024);
	memset(p, 1, 64 * 1024);
	return p;
}

__attribute__((noinline)) void churn(void)
{
	for (int i = 0; i < 200; i++) {
		char *p = malloc(100 + i);
		memset(p, 0, 16);
		keep = p;
		free(p);
	}
}

int main(int argc, char **argv)
{
	int secs = argc > 1 ? atoi(argv[1]) : 10;
	usleep(argc > 2 ? atoi(argv[2]) * 1000 : 500000); /* time for the capture to attach */
	for (int t = 0; t < secs * 10; t++) {
		keep = leak_buffer();
		churn();
		usleep(100000);
	}
	return 0;
}
