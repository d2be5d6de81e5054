/* Ground truth for the CPU and off-CPU profiles (tests/profiles_e2e.rs): each round burns
 * 30 ms of CPU in hot_loop(), 10 ms in cold_loop() and sleeps 40 ms in wait_here(), for
 * argv[1] seconds: on CPU, hot_loop is 75% of the process and cold_loop 25%. */
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static volatile unsigned long sink;

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

__attribute__((noinline)) void hot_loop(double secs)
{
	double end = now() + secs;
	while (now() < end)
		for (int i = 0; i < 1000; i++)
			sink += i;
}

__attribute__((noinline)) void cold_loop(double secs)
{
	double end = now() + secs;
	while (now() < end)
		for (int i = 0; i < 1000; i++)
			sink ^= i;
}

__attribute__((noinline)) void wait_here(void)
{
	usleep(40000);
	sink++; /* not a tail call: wait_here keeps its frame */
}

int main(int argc, char **argv)
{
	int secs = argc > 1 ? atoi(argv[1]) : 10;
	usleep(argc > 2 ? atoi(argv[2]) * 1000 : 500000);
	for (int t = 0; t < secs * 1000 / 80; t++) {
		hot_loop(0.030);
		cold_loop(0.010);
		wait_here();
	}
	return 0;
}
