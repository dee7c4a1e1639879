/*
 * refc: the bench's C reference consumer. The classic libnetfilter_queue
 * loop, one recv() and one verdict message per packet: accept everything.
 * Bound as knockgate binds its queue (copy range 256, queue length 16384
 * as gate.DefaultMaxQueueLen, a receive buffer forced to hold the whole
 * queue as gate's readBufferFor sizes it: 16384 x (256 + 512) bytes).
 *
 *   refc [queue [queues]]   serves queues queue .. queue+queues-1, one
 *                           thread, handle and socket per queue (for
 *                           --queue-balance); runs until SIGINT or SIGTERM
 *
 * Built by `make bench` (gcc, libnetfilter-queue-dev); not part of the
 * product. Stopping it with SIGSTOP and resuming it with SIGCONT (the
 * bench's drain mode) is harmless: recv() resumes where it was.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <sys/socket.h>
#include <linux/netfilter.h>
#include <libnetfilter_queue/libnetfilter_queue.h>

#define COPY_RANGE 256
#define MAX_QUEUE_LEN 16384
#define READ_BUFFER (MAX_QUEUE_LEN * (COPY_RANGE + 512))
#define MAX_QUEUES 16

/* One reader: its own handle, socket and counters, touched by its thread
 * alone until main reads them at exit. */
struct reader {
	unsigned queue;
	struct nfq_handle *h;
	struct nfq_q_handle *qh;
	pthread_t thread;
	unsigned long long packets, verdict_errors, enobufs;
};

static int cb(struct nfq_q_handle *qh, struct nfgenmsg *nfmsg, struct nfq_data *nfa, void *data)
{
	(void)nfmsg;
	struct reader *r = data;
	struct nfqnl_msg_packet_hdr *ph = nfq_get_msg_packet_hdr(nfa);
	if (!ph)
		return 0;
	__atomic_add_fetch(&r->packets, 1, __ATOMIC_RELAXED);
	if (nfq_set_verdict(qh, ntohl(ph->packet_id), NF_ACCEPT, 0, NULL) < 0)
		__atomic_add_fetch(&r->verdict_errors, 1, __ATOMIC_RELAXED);
	return 0;
}

static int bind_queue(struct reader *r)
{
	r->h = nfq_open();
	if (!r->h) { perror("refc: nfq_open"); return -1; }
	r->qh = nfq_create_queue(r->h, r->queue, cb, r);
	if (!r->qh) { perror("refc: nfq_create_queue"); return -1; }
	if (nfq_set_mode(r->qh, NFQNL_COPY_PACKET, COPY_RANGE) < 0) { perror("refc: nfq_set_mode"); return -1; }
	if (nfq_set_queue_maxlen(r->qh, MAX_QUEUE_LEN) < 0) { perror("refc: nfq_set_queue_maxlen"); return -1; }
	int fd = nfq_fd(r->h);
	int rcv = READ_BUFFER;
	if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcv, sizeof rcv) < 0)
		setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof rcv);
	return 0;
}

static void *serve(void *arg)
{
	struct reader *r = arg;
	int fd = nfq_fd(r->h);
	char buf[65536] __attribute__((aligned));
	for (;;) {
		ssize_t n = recv(fd, buf, sizeof buf, 0);
		if (n < 0) {
			if (errno == ENOBUFS) { __atomic_add_fetch(&r->enobufs, 1, __ATOMIC_RELAXED); continue; }
			if (errno == EINTR) continue;
			perror("refc: recv");
			return NULL;
		}
		nfq_handle_packet(r->h, buf, (int)n);
	}
}

int main(int argc, char **argv)
{
	unsigned queue = argc > 1 ? (unsigned)atoi(argv[1]) : 0;
	int queues = argc > 2 ? atoi(argv[2]) : 1;
	if (queues < 1 || queues > MAX_QUEUES || queue + (unsigned)queues > 65536) {
		fprintf(stderr, "refc: usage: refc [queue [queues (1-%d)]]\n", MAX_QUEUES);
		return 2;
	}
	/* The readers never see SIGINT or SIGTERM: main waits for them with
	 * sigwait, and the process's exit ends the readers and closes their
	 * sockets, which unbinds the queues. */
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &set, NULL);

	struct reader rs[MAX_QUEUES];
	memset(rs, 0, sizeof rs);
	for (int i = 0; i < queues; i++) {
		rs[i].queue = queue + (unsigned)i;
		if (bind_queue(&rs[i]) < 0)
			return 1;
	}
	for (int i = 0; i < queues; i++) {
		int err = pthread_create(&rs[i].thread, NULL, serve, &rs[i]);
		if (err) { fprintf(stderr, "refc: pthread_create: %s\n", strerror(err)); return 1; }
	}
	printf("refc: serving queues %u-%u\n", queue, queue + (unsigned)queues - 1);
	fflush(stdout);

	int sig;
	sigwait(&set, &sig);
	unsigned long long packets = 0, verdict_errors = 0, enobufs = 0;
	for (int i = 0; i < queues; i++) {
		packets += __atomic_load_n(&rs[i].packets, __ATOMIC_RELAXED);
		verdict_errors += __atomic_load_n(&rs[i].verdict_errors, __ATOMIC_RELAXED);
		enobufs += __atomic_load_n(&rs[i].enobufs, __ATOMIC_RELAXED);
	}
	printf("refc: packets=%llu verdict_errors=%llu enobufs=%llu\n", packets, verdict_errors, enobufs);
	fflush(stdout);
	return 0;
}
