/* COpenSSL: OpenSSL 3 for Swift. Macros Swift cannot import become static inline functions here. */
#ifndef RELAYGATE_COPENSSL_SHIM_H
#define RELAYGATE_COPENSSL_SHIM_H
#include <openssl/ssl.h>
#include <openssl/err.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/bio.h>

static inline int rg_SSL_CTX_set_min_proto_version(SSL_CTX *ctx, int v) { return (int)SSL_CTX_set_min_proto_version(ctx, v); }
static inline long rg_SSL_CTX_set_mode(SSL_CTX *ctx, long m) { return SSL_CTX_set_mode(ctx, m); }
static inline long rg_SSL_CTX_set_session_cache_mode(SSL_CTX *ctx, long m) { return SSL_CTX_set_session_cache_mode(ctx, m); }
static inline uint64_t rg_SSL_OP_NO_COMPRESSION(void) { return SSL_OP_NO_COMPRESSION; }
static inline uint64_t rg_SSL_OP_NO_RENEGOTIATION(void) { return SSL_OP_NO_RENEGOTIATION; }
static inline uint64_t rg_SSL_OP_CIPHER_SERVER_PREFERENCE(void) { return SSL_OP_CIPHER_SERVER_PREFERENCE; }
static inline int rg_TLS1_2_VERSION(void) { return TLS1_2_VERSION; }
static inline int rg_TLS1_3_VERSION(void) { return TLS1_3_VERSION; }
static inline long rg_SSL_SESS_CACHE_SERVER(void) { return SSL_SESS_CACHE_SERVER; }
static inline long rg_SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER(void) { return SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER; }
static inline long rg_SSL_MODE_ENABLE_PARTIAL_WRITE(void) { return SSL_MODE_ENABLE_PARTIAL_WRITE; }
static inline long rg_SSL_MODE_RELEASE_BUFFERS(void) { return SSL_MODE_RELEASE_BUFFERS; }
static inline size_t rg_BIO_pending(BIO *b) { return BIO_ctrl_pending(b); }
static inline int rg_XN_FLAG_RFC2253(void) { return (int)XN_FLAG_RFC2253; }
static inline int rg_SSL_VERIFY_PEER(void) { return SSL_VERIFY_PEER; }
static inline int rg_SSL_VERIFY_NONE(void) { return SSL_VERIFY_NONE; }
static inline int rg_GEN_DNS(void) { return GEN_DNS; }
static inline int rg_GEN_EMAIL(void) { return GEN_EMAIL; }
static inline int rg_GEN_IPADD(void) { return GEN_IPADD; }

/* Server name indication: the callback picks an SSL_CTX by name. */
typedef int (*rg_servername_cb)(SSL *ssl, int *alert, void *arg);
static inline long rg_SSL_CTX_set_tlsext_servername_callback(SSL_CTX *ctx, rg_servername_cb cb) {
    return SSL_CTX_set_tlsext_servername_callback(ctx, cb);
}
static inline long rg_SSL_CTX_set_tlsext_servername_arg(SSL_CTX *ctx, void *arg) {
    return SSL_CTX_set_tlsext_servername_arg(ctx, arg);
}
static inline int rg_TLSEXT_NAMETYPE_host_name(void) { return TLSEXT_NAMETYPE_host_name; }
static inline int rg_SSL_TLSEXT_ERR_OK(void) { return SSL_TLSEXT_ERR_OK; }
static inline int rg_SSL_TLSEXT_ERR_NOACK(void) { return SSL_TLSEXT_ERR_NOACK; }

/* Subject alternative names, without the sk_ macros. */
static inline int rg_san_count(GENERAL_NAMES *names) { return sk_GENERAL_NAME_num(names); }
static inline GENERAL_NAME *rg_san_at(GENERAL_NAMES *names, int i) { return sk_GENERAL_NAME_value(names, i); }
static inline void rg_san_free(GENERAL_NAMES *names) { GENERAL_NAMES_free(names); }
static inline int rg_general_name_type(GENERAL_NAME *n) { return n->type; }
static inline ASN1_STRING *rg_general_name_string(GENERAL_NAME *n) { return n->d.ia5; }
static inline ASN1_OCTET_STRING *rg_general_name_ip(GENERAL_NAME *n) { return n->d.iPAddress; }
static inline void rg_OPENSSL_free(void *p) { OPENSSL_free(p); }
/* RFC 7672 3.1.1: a DANE-EE(3) match authenticates the server whatever names it carries. */
static inline unsigned long rg_SSL_dane_no_ee_namechecks(SSL *s) { return SSL_dane_set_flags(s, DANE_FLAG_NO_DANE_EE_NAMECHECKS); }
static inline long rg_SSL_set_tlsext_host_name(SSL *s, const char *name) { return SSL_set_tlsext_host_name(s, name); }
#endif
