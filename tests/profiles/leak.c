/* Ground truth for the heap profile (tests/profiles_e2e.rs): leaks 64 KiB every 100 ms from
 * leak_buffer() and churns 200 malloc/free pairs per 100 ms from churn(), for argv[1] seconds.
 * Built -O2 without frame pointers, as distributions build. Prints how many buffers it leaked
 * and the CLOCK_MONOTONIC times of the first and last (the capture's clock): on a busy machine
 * the loop runs slower than 10 per second, and that is the truth to compare with. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
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
	struct timespec first, last;
	int n = 0;
	for (int t = 0; t < secs * 10; t++) {
		clock_gettime(CLOCK_MONOTONIC, n == 0 ? &first : &last);
		keep = leak_buffer();
		n++;
		churn();
		usleep(100000);
	}
	printf("leaks=%d first_ns=%lld last_ns=%lld\n", n,
	       (long long)first.tv_sec * 1000000000LL + first.tv_nsec,
	       (long long)last.tv_sec * 1000000000LL + last.tv_nsec);
	return 0;
}
