/* CLDAP: OpenLDAP's libldap for Swift. Macros with casts that Swift cannot import become functions. */
#ifndef RELAYGATE_CLDAP_SHIM_H
#define RELAYGATE_CLDAP_SHIM_H
#define LDAP_DEPRECATED 0
#include <ldap.h>
#include <lber.h>
#include <sys/time.h>

static inline int rg_LDAP_SCOPE_SUBTREE(void) { return LDAP_SCOPE_SUBTREE; }
static inline int rg_LDAP_SCOPE_BASE(void) { return LDAP_SCOPE_BASE; }
static inline int rg_LDAP_OPT_ON(void) { return 1; }

/* Simple bind (RFC 4513 5.1): LDAP_SASL_SIMPLE is a cast NULL that Swift cannot see. */
static inline int rg_ldap_simple_bind(LDAP *ld, const char *dn, const char *password, int len) {
    struct berval cred;
    cred.bv_val = (char *)password;
    cred.bv_len = (ber_len_t)len;
    return ldap_sasl_bind_s(ld, dn, LDAP_SASL_SIMPLE, &cred, NULL, NULL, NULL);
}

/* RFC 4515 escaping of one assertion value; the result is freed with ber_memfree. */
static inline char *rg_ldap_escape_filter_value(const char *value, int len) {
    struct berval in, out;
    in.bv_val = (char *)value;
    in.bv_len = (ber_len_t)len;
    out.bv_val = NULL;
    out.bv_len = 0;
    if (ldap_bv2escaped_filter_value(&in, &out) != 0) return NULL;
    return out.bv_val;
}

static inline int rg_ldap_set_timeouts(LDAP *ld, int seconds) {
    struct timeval tv = { seconds, 0 };
    int rc = ldap_set_option(ld, LDAP_OPT_NETWORK_TIMEOUT, &tv);
    if (rc == LDAP_OPT_SUCCESS) rc = ldap_set_option(ld, LDAP_OPT_TIMEOUT, &tv);
    return rc;
}

static inline int rg_ldap_search(LDAP *ld, const char *base, int scope, const char *filter, char **attrs,
                                 int seconds, int sizelimit, LDAPMessage **res) {
    struct timeval tv = { seconds, 0 };
    return ldap_search_ext_s(ld, base, scope, filter, attrs, 0, NULL, NULL, &tv, sizelimit, res);
}

static inline int rg_berval_len(struct berval *b) { return (int)b->bv_len; }
static inline const char *rg_berval_data(struct berval *b) { return b->bv_val; }
#endif
