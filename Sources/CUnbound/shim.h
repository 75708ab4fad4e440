/* CUnbound: libunbound, the validating resolver library, for Swift. */
#ifndef RELAYGATE_CUNBOUND_SHIM_H
#define RELAYGATE_CUNBOUND_SHIM_H
#include <unbound.h>
static inline int rg_ub_len(struct ub_result *r, int i) { return r->len[i]; }
static inline const unsigned char *rg_ub_data(struct ub_result *r, int i) { return (const unsigned char *)r->data[i]; }
#endif
