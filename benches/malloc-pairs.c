/* The heap sampler's cost per call, for benches/profile-overhead.sh: N malloc+free pairs of
 * SIZE bytes in a loop, timed; prints ns per pair. Waits WAIT ms first (time to attach). */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static void *volatile keep;

int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 1000000;
	long size = argc > 2 ? atol(argv[2]) : 64;
	int wait_ms = argc > 3 ? atoi(argv[3]) : 0;
	usleep(wait_ms * 1000);
	struct timespec a, b;
	clock_gettime(CLOCK_MONOTONIC, &a);
	for (long i = 0; i < n; i++) {
		void *p = malloc(size);
		keep = p;
		free(p);
	}
	clock_gettime(CLOCK_MONOTONIC, &b);
	double ns = (b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec);
	printf("%.1f\n", ns / n);
	return 0;
}
