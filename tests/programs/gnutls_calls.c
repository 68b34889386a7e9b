/* A GnuTLS client that moves plaintext through the record calls wget and curl do not use, against
 * a line echo server (gnutls-serv --echo) on 127.0.0.1:PORT:
 *   "one," by gnutls_record_send and "two\n" by gnutls_record_send2 on a corked session, sent by
 *   gnutls_record_uncork (which calls gnutls_record_send itself: the bytes must be seen once);
 *   their echo read by gnutls_record_recv_seq;
 *   "three\n" by gnutls_record_send_range (length hiding: TLS 1.2 with a CBC suite), its echo
 *   read by gnutls_record_recv_packet (zero copy);
 *   then gnutls_bye(GNUTLS_SHUT_RDWR), which waits for the server's close_notify.
 * Prints what it read, then "bye=N" with gnutls_bye's result. Exits 99 on any failure. */
#include "common.h"

#include <gnutls/gnutls.h>

static void check(ssize_t ret, const char *what)
{
    if (ret < 0) {
        fprintf(stderr, "%s: %s\n", what, gnutls_strerror((int)ret));
        exit(99);
    }
}

/* Read exactly `n` bytes into `out` with gnutls_record_recv_seq. */
static void read_seq(gnutls_session_t s, char *out, size_t n)
{
    unsigned char seq[8];
    while (n > 0) {
        ssize_t r = gnutls_record_recv_seq(s, out, n, seq);
        if (r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED)
            continue;
        check(r, "gnutls_record_recv_seq");
        if (r == 0)
            exit(99);
        out += r;
        n -= (size_t)r;
    }
}

/* Read exactly `n` bytes into `out` with gnutls_record_recv_packet. */
static void read_packets(gnutls_session_t s, char *out, size_t n)
{
    while (n > 0) {
        gnutls_packet_t p = NULL;
        ssize_t r = gnutls_record_recv_packet(s, &p);
        if (r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED)
            continue;
        check(r, "gnutls_record_recv_packet");
        if (r == 0 || p == NULL)
            exit(99);
        gnutls_datum_t d;
        gnutls_packet_get(p, &d, NULL);
        if (d.size > n)
            exit(99);
        memcpy(out, d.data, d.size);
        out += d.size;
        n -= d.size;
        gnutls_packet_deinit(p);
    }
}

int main(int argc, char **argv)
{
    if (argc != 2)
        exit(99);
    int fd = connect_to(atoi(argv[1]));
    gnutls_certificate_credentials_t cred;
    gnutls_session_t s;
    check(gnutls_certificate_allocate_credentials(&cred), "credentials");
    check(gnutls_init(&s, GNUTLS_CLIENT), "gnutls_init");
    check(gnutls_priority_set_direct(
              s, "NORMAL:-VERS-ALL:+VERS-TLS1.2:-CIPHER-ALL:+AES-128-CBC:-MAC-ALL:+SHA1", NULL),
          "priority");
    check(gnutls_credentials_set(s, GNUTLS_CRD_CERTIFICATE, cred), "credentials_set");
    gnutls_transport_set_int(s, fd);
    int ret;
    do
        ret = gnutls_handshake(s);
    while (ret < 0 && !gnutls_error_is_fatal(ret));
    check(ret, "gnutls_handshake");

    gnutls_record_cork(s);
    check(gnutls_record_send(s, "one,", 4), "gnutls_record_send");
    check(gnutls_record_send2(s, "two\n", 4, 0, 0), "gnutls_record_send2");
    check(gnutls_record_uncork(s, GNUTLS_RECORD_WAIT), "gnutls_record_uncork");
    char first[8];
    read_seq(s, first, sizeof first);

    if (!gnutls_record_can_use_length_hiding(s)) {
        fprintf(stderr, "no length hiding with this suite\n");
        exit(99);
    }
    gnutls_range_st range = {.low = 6, .high = 64};
    check(gnutls_record_send_range(s, "three\n", 6, &range), "gnutls_record_send_range");
    char second[6];
    read_packets(s, second, sizeof second);

    do
        ret = gnutls_bye(s, GNUTLS_SHUT_RDWR);
    while (ret == GNUTLS_E_AGAIN || ret == GNUTLS_E_INTERRUPTED);
    fwrite(first, 1, sizeof first, stdout);
    fwrite(second, 1, sizeof second, stdout);
    printf("bye=%d\n", ret);
    close(fd);
    gnutls_deinit(s);
    gnutls_certificate_free_credentials(cred);
    return 0;
}
