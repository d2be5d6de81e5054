// Cost of `retrace capture` per traced syscall, measured in the traced process itself.
//
// One thread, CPU time (CLOCK_PROCESS_CPUTIME_ID) per operation, for three shapes:
//   other  getppid(): a syscall the capture does not follow (what every syscall of every
//          process pays: the syscall tracing slow path and the program's first instructions)
//   pipe   write()+read() of 64 bytes on a pipe: read/write family on fds that are not
//          followed (the per-fd check)
//   tcp    an HTTP-like exchange on a loopback TCP connection: write 64 bytes, read them,
//          write 512 bytes back, read them (4 followed calls, each a message start: 4 L7
//          records)
// Run by benches/capture-syscalls.sh without and with a capture; the difference is the cost.
// Loopback TCP work is charged to this process in both runs, so it cancels out.
//
// Usage: syscall-cost MODE ITERATIONS  -> prints "MODE ns_per_op"
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double cpu_ns(void)
{
	struct timespec t;
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
	return (double)t.tv_sec * 1e9 + (double)t.tv_nsec;
}

static void die(const char *what)
{
	perror(what);
	exit(1);
}

static void full_read(int fd, char *buf, size_t n)
{
	while (n) {
		ssize_t r = read(fd, buf, n);
		if (r <= 0)
			die("read");
		buf += r;
		n -= (size_t)r;
	}
}

int main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: %s other|pipe|tcp ITERATIONS\n", argv[0]);
		return 2;
	}
	const char *mode = argv[1];
	long n = atol(argv[2]);
	char buf[4096];
	memset(buf, 'x', sizeof(buf));
	double t0, t1;

	if (!strcmp(mode, "other")) {
		t0 = cpu_ns();
		for (long i = 0; i < n; i++)
			getppid();
		t1 = cpu_ns();
	} else if (!strcmp(mode, "pipe")) {
		int p[2];
		if (pipe(p))
			die("pipe");
		t0 = cpu_ns();
		for (long i = 0; i < n; i++) {
			if (write(p[1], buf, 64) != 64)
				die("write");
			full_read(p[0], buf, 64);
		}
		t1 = cpu_ns();
		n *= 2;
	} else if (!strcmp(mode, "tcp")) {
		int l = socket(AF_INET, SOCK_STREAM, 0);
		struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
		socklen_t al = sizeof(a);
		if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof(a)) || listen(l, 1) ||
		    getsockname(l, (struct sockaddr *)&a, &al))
			die("listen");
		int c = socket(AF_INET, SOCK_STREAM, 0);
		if (c < 0 || connect(c, (struct sockaddr *)&a, sizeof(a)))
			die("connect");
		int s = accept(l, NULL, NULL);
		if (s < 0)
			die("accept");
		int one = 1;
		setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		t0 = cpu_ns();
		for (long i = 0; i < n; i++) {
			if (write(c, buf, 64) != 64)
				die("write");
			full_read(s, buf, 64);
			if (write(s, buf, 512) != 512)
				die("write");
			full_read(c, buf, 512);
		}
		t1 = cpu_ns();
		n *= 4;
		close(c);
		close(s);
		close(l);
	} else {
		fprintf(stderr, "unknown mode %s\n", mode);
		return 2;
	}
	printf("%s %.1f\n", mode, (t1 - t0) / (double)n);
	return 0;
}
