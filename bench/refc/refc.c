/*
 * refc: the bench's C reference consumer. The classic libnetfilter_queue
 * loop, one recv() and one verdict message per packet: accept everything.
 * Bound as knockgate binds its queue (copy range 256, queue length 4096,
 * a receive buffer forced to hold the whole queue).
 *
 *   refc [queue]      runs until SIGINT or SIGTERM
 *
 * Built by `make bench` (gcc, libnetfilter-queue-dev); not part of the
 * product.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <sys/socket.h>
#include <linux/netfilter.h>
#include <libnetfilter_queue/libnetfilter_queue.h>

#define COPY_RANGE 256
#define MAX_QUEUE_LEN 4096
#define READ_BUFFER (MAX_QUEUE_LEN * (COPY_RANGE + 512))

static volatile sig_atomic_t stop;
static unsigned long long packets, verdict_errors, enobufs;

static void on_signal(int sig) { (void)sig; stop = 1; }

static int cb(struct nfq_q_handle *qh, struct nfgenmsg *nfmsg, struct nfq_data *nfa, void *data)
{
	(void)nfmsg; (void)data;
	struct nfqnl_msg_packet_hdr *ph = nfq_get_msg_packet_hdr(nfa);
	if (!ph)
		return 0;
	packets++;
	if (nfq_set_verdict(qh, ntohl(ph->packet_id), NF_ACCEPT, 0, NULL) < 0)
		verdict_errors++;
	return 0;
}

int main(int argc, char **argv)
{
	unsigned queue = argc > 1 ? (unsigned)atoi(argv[1]) : 0;
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_signal; /* no SA_RESTART: recv() returns EINTR */
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);

	struct nfq_handle *h = nfq_open();
	if (!h) { perror("refc: nfq_open"); return 1; }
	struct nfq_q_handle *qh = nfq_create_queue(h, queue, cb, NULL);
	if (!qh) { perror("refc: nfq_create_queue"); return 1; }
	if (nfq_set_mode(qh, NFQNL_COPY_PACKET, COPY_RANGE) < 0) { perror("refc: nfq_set_mode"); return 1; }
	if (nfq_set_queue_maxlen(qh, MAX_QUEUE_LEN) < 0) { perror("refc: nfq_set_queue_maxlen"); return 1; }
	int fd = nfq_fd(h);
	int rcv = READ_BUFFER;
	if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcv, sizeof rcv) < 0)
		setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof rcv);
	printf("refc: serving queue %u\n", queue);
	fflush(stdout);

	char buf[65536] __attribute__((aligned));
	while (!stop) {
		ssize_t n = recv(fd, buf, sizeof buf, 0);
		if (n < 0) {
			if (errno == ENOBUFS) { enobufs++; continue; }
			if (errno == EINTR) continue;
			perror("refc: recv");
			break;
		}
		nfq_handle_packet(h, buf, (int)n);
	}
	nfq_destroy_queue(qh);
	nfq_close(h);
	printf("refc: packets=%llu verdict_errors=%llu enobufs=%llu\n", packets, verdict_errors, enobufs);
	return 0;
}
