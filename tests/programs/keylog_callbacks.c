/* A program with key-log callbacks of its own, in OpenSSL and in GnuTLS, against a TLS server on
 * 127.0.0.1:PORT (a GET of /index.html over each library). It checks what the getters answer:
 *   OpenSSL: a new SSL_CTX has no callback (NULL); after SSL_CTX_set_keylog_callback, the getter
 *   gives ours; the handshake calls it;
 *   GnuTLS: a new session has GnuTLS's own function (not NULL); after
 *   gnutls_session_set_keylog_function, the getter gives ours; the handshake calls it; set back,
 *   GnuTLS's own is given again.
 * Prints each check ("openssl new=NULL" …) and each line its callbacks got, as
 * "openssl LINE" and "gnutls LABEL <client random> <secret>" (hex): traced, the output must be
 * the same, and the lines those netintercept logs. Exits 99 on any failure. */
#include "common.h"

#include <gnutls/gnutls.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

static void openssl_line(const SSL *ssl, const char *line)
{
    (void)ssl;
    printf("openssl %s\n", line);
}

static void hex(const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        printf("%02x", p[i]);
}

static int gnutls_line(gnutls_session_t s, const char *label, const gnutls_datum_t *secret)
{
    gnutls_datum_t client, server;
    gnutls_session_get_random(s, &client, &server);
    printf("gnutls %s ", label);
    hex(client.data, client.size);
    printf(" ");
    hex(secret->data, secret->size);
    printf("\n");
    return 0;
}

static const char GET[] = "GET /index.html HTTP/1.0\r\n\r\n";

static void openssl_get(int port)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx)
        die("SSL_CTX_new");
    printf("openssl new=%s\n", SSL_CTX_get_keylog_callback(ctx) ? "set" : "NULL");
    SSL_CTX_set_keylog_callback(ctx, openssl_line);
    printf("openssl set=%s\n", SSL_CTX_get_keylog_callback(ctx) == openssl_line ? "ours" : "other");
    SSL *ssl = SSL_new(ctx);
    int s = connect_to(port);
    SSL_set_fd(ssl, s);
    if (SSL_connect(ssl) != 1) {
        ERR_print_errors_fp(stderr);
        exit(99);
    }
    SSL_write(ssl, GET, sizeof GET - 1);
    char buf[4096];
    while (SSL_read(ssl, buf, sizeof buf) > 0) {
    }
    SSL_CTX_set_keylog_callback(ctx, NULL);
    printf("openssl unset=%s\n", SSL_CTX_get_keylog_callback(ctx) ? "set" : "NULL");
    SSL_free(ssl);
    SSL_CTX_free(ctx);
    close(s);
}

static void gnutls_get(int port)
{
    gnutls_session_t sess;
    gnutls_certificate_credentials_t cred;
    if (gnutls_init(&sess, GNUTLS_CLIENT) < 0)
        die("gnutls_init");
    gnutls_keylog_func own = gnutls_session_get_keylog_function(sess);
    printf("gnutls new=%s\n", own ? "gnutls's own" : "NULL");
    gnutls_session_set_keylog_function(sess, gnutls_line);
    printf("gnutls set=%s\n", gnutls_session_get_keylog_function(sess) == gnutls_line ? "ours" : "other");
    gnutls_certificate_allocate_credentials(&cred);
    gnutls_credentials_set(sess, GNUTLS_CRD_CERTIFICATE, cred);
    gnutls_set_default_priority(sess);
    int s = connect_to(port);
    gnutls_transport_set_int(sess, s);
    int r;
    do {
        r = gnutls_handshake(sess);
    } while (r < 0 && !gnutls_error_is_fatal(r));
    if (r < 0) {
        fprintf(stderr, "gnutls_handshake: %s\n", gnutls_strerror(r));
        exit(99);
    }
    gnutls_record_send(sess, GET, sizeof GET - 1);
    char buf[4096];
    while (gnutls_record_recv(sess, buf, sizeof buf) > 0) {
    }
    gnutls_session_set_keylog_function(sess, own);
    printf("gnutls reset=%s\n", gnutls_session_get_keylog_function(sess) == own ? "gnutls's own" : "other");
    gnutls_deinit(sess);
    gnutls_certificate_free_credentials(cred);
    close(s);
}

int main(int argc, char **argv)
{
    if (argc != 2)
        return 99;
    int port = atoi(argv[1]);
    setvbuf(stdout, NULL, _IOLBF, 0);
    openssl_get(port);
    gnutls_get(port);
    return 0;
}
