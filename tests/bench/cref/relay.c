/*
 * relay.c: the benchmark's reference limit, the simplest forwarder over
 * per-port UDP sockets that still does what a Jingle Nodes relay must.
 *
 *   relay BIND_ADDR BASE_PORT CHANNELS
 *
 * Channel c owns ports P = BASE_PORT + 4c .. P+3 (BASE_PORT even): P <-> P+2
 * (RTP) and P+1 <-> P+3 (RTCP). Each port latches to the first source that
 * sends to it and drops other sources; a datagram is forwarded from the
 * other port of its leg to the address latched there, and dropped while
 * that port has not latched (so nothing is ever sent to an address that did
 * not send first). No expiry, no rate limit, no grace period, no IPv6: this
 * is the floor a per-port-socket relay cannot go below, not a product.
 *
 * One thread, level-triggered epoll, one recvfrom per readiness event: at
 * VoIP rates a ready socket holds one datagram, so draining it until EAGAIN
 * would cost a wasted syscall per packet; a socket with more queued is
 * simply reported ready again.
 *
 * Prints "ready channels=N setup_ns=T" once every socket is bound, and on
 * SIGTERM/SIGINT one JSON line of counters, then exits 0.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

struct port {
	int fd;
	int latched;
	struct sockaddr_in peer;
};

static volatile sig_atomic_t stop;

static void on_signal(int sig) { (void)sig; stop = 1; }

static int64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void die(const char *what)
{
	fprintf(stderr, "relay: %s: %s\n", what, strerror(errno));
	exit(1);
}

int main(int argc, char **argv)
{
	if (argc != 4) {
		fprintf(stderr, "usage: relay BIND_ADDR BASE_PORT CHANNELS\n");
		return 2;
	}
	struct in_addr bind_addr;
	if (inet_pton(AF_INET, argv[1], &bind_addr) != 1) {
		fprintf(stderr, "relay: bad IPv4 address %s\n", argv[1]);
		return 2;
	}
	long base = strtol(argv[2], NULL, 10), channels = strtol(argv[3], NULL, 10);
	if (base < 1024 || base % 2 != 0 || channels < 0 || base + 4 * channels > 65536) {
		fprintf(stderr, "relay: need an even BASE_PORT >= 1024 and BASE_PORT + 4*CHANNELS <= 65536\n");
		return 2;
	}

	/* Four sockets per channel: 10,000 channels need 40,000 descriptors. */
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}

	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_signal; /* no SA_RESTART: epoll_wait returns EINTR */
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);

	int64_t t0 = now_ns();
	int ep = epoll_create1(EPOLL_CLOEXEC);
	if (ep < 0)
		die("epoll_create1");
	long nports = 4 * channels;
	struct port *ports = calloc(nports > 0 ? nports : 1, sizeof *ports);
	if (!ports)
		die("calloc");
	for (long i = 0; i < nports; i++) {
		int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (fd < 0)
			die("socket");
		struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr = bind_addr,
					.sin_port = htons((uint16_t)(base + i))};
		if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0)
			die("bind");
		struct epoll_event ev = {.events = EPOLLIN, .data.u64 = (uint64_t)i};
		if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0)
			die("epoll_ctl");
		ports[i].fd = fd;
	}
	printf("ready channels=%ld setup_ns=%lld\n", channels, (long long)(now_ns() - t0));
	fflush(stdout);

	uint64_t relayed = 0, unlatched = 0, foreign = 0, send_errors = 0;
	static char buf[2048];
	struct epoll_event events[256];
	while (!stop) {
		int n = epoll_wait(ep, events, 256, -1);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			die("epoll_wait");
		}
		for (int e = 0; e < n; e++) {
			long i = (long)events[e].data.u64;
			struct port *in = &ports[i];
			struct sockaddr_in src;
			socklen_t slen = sizeof src;
			ssize_t len = recvfrom(in->fd, buf, sizeof buf, 0, (struct sockaddr *)&src, &slen);
			if (len < 0)
				continue; /* EAGAIN: nothing after all */
			if (!in->latched) {
				in->peer = src;
				in->latched = 1;
			} else if (in->peer.sin_addr.s_addr != src.sin_addr.s_addr ||
				   in->peer.sin_port != src.sin_port) {
				foreign++;
				continue;
			}
			struct port *out = &ports[i ^ 2]; /* P <-> P+2, P+1 <-> P+3 */
			if (!out->latched) {
				unlatched++;
				continue;
			}
			if (sendto(out->fd, buf, (size_t)len, 0, (struct sockaddr *)&out->peer, sizeof out->peer) < 0)
				send_errors++;
			else
				relayed++;
		}
	}
	printf("{\"relayed\":%llu,\"dropped_peer_not_latched\":%llu,\"dropped_foreign_source\":%llu,\"send_errors\":%llu}\n",
	       (unsigned long long)relayed, (unsigned long long)unlatched, (unsigned long long)foreign,
	       (unsigned long long)send_errors);
	fflush(stdout);
	return 0;
}
