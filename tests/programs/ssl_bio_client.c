/* An HTTPS client that speaks only through an OpenSSL SSL BIO chain (BIO_new_ssl_connect), as
 * OpenSSL's own examples do, against 127.0.0.1:PORT: the connect BIO connects and the handshake
 * runs inside BIO_do_connect; "GET /index.html " goes by BIO_write_ex and "HTTP/1.0\r\n\r\n" by
 * BIO_puts; the answer is read by BIO_read_ex until the end and printed. It never calls
 * SSL_read or SSL_write. Exits 99 on any failure. */
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void fail(const char *what)
{
    fprintf(stderr, "%s failed\n", what);
    ERR_print_errors_fp(stderr);
    exit(99);
}

int main(int argc, char **argv)
{
    if (argc != 2)
        fail("usage: ssl_bio_client PORT");
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == NULL)
        fail("SSL_CTX_new");
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    BIO *bio = BIO_new_ssl_connect(ctx);
    if (bio == NULL)
        fail("BIO_new_ssl_connect");
    char host[64];
    snprintf(host, sizeof host, "127.0.0.1:%s", argv[1]);
    BIO_set_conn_hostname(bio, host);
    if (BIO_do_connect(bio) <= 0)
        fail("BIO_do_connect");
    const char *first = "GET /index.html ";
    size_t put = 0;
    if (!BIO_write_ex(bio, first, strlen(first), &put) || put != strlen(first))
        fail("BIO_write_ex");
    if (BIO_puts(bio, "HTTP/1.0\r\n\r\n") <= 0)
        fail("BIO_puts");
    char buf[4096];
    size_t got = 0;
    while (BIO_read_ex(bio, buf, sizeof buf, &got))
        fwrite(buf, 1, got, stdout);
    BIO_free_all(bio);
    SSL_CTX_free(ctx);
    return 0;
}
