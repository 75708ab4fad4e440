/* CPAM: one PAM authentication as a single call, so the conversation and the fail-delay callbacks are
 * plain C functions and never Swift closures crossing threads. */
#ifndef RELAYGATE_CPAM_SHIM_H
#define RELAYGATE_CPAM_SHIM_H
#include <security/pam_appl.h>
#include <stdlib.h>
#include <string.h>

struct rg_pam_credentials { const char *user; const char *password; };

/* Answers PAM's prompts: echo-off prompts get the password, echo-on prompts the user name; PAM frees
 * the responses, so they come from calloc/strdup. */
static int rg_pam_conversation(int n, const struct pam_message **msg, struct pam_response **resp, void *appdata) {
    const struct rg_pam_credentials *c = (const struct rg_pam_credentials *)appdata;
    if (n <= 0 || n > PAM_MAX_NUM_MSG) return PAM_CONV_ERR;
    struct pam_response *r = (struct pam_response *)calloc((size_t)n, sizeof(struct pam_response));
    if (r == NULL) return PAM_BUF_ERR;
    for (int i = 0; i < n; i++) {
        const char *answer = NULL;
        switch (msg[i]->msg_style) {
        case PAM_PROMPT_ECHO_OFF: answer = c->password; break;
        case PAM_PROMPT_ECHO_ON: answer = c->user; break;
        default: break; /* PAM_ERROR_MSG, PAM_TEXT_INFO: nothing to answer */
        }
        if (answer != NULL) {
            r[i].resp = strdup(answer);
            if (r[i].resp == NULL) {
                for (int k = 0; k < i; k++) free(r[k].resp);
                free(r);
                return PAM_BUF_ERR;
            }
        }
    }
    *resp = r;
    return PAM_SUCCESS;
}

/* Takes over PAM's failure delay (PAM_FAIL_DELAY): the server applies one uniform delay itself,
 * on a timer, without holding a thread. */
static void rg_pam_no_delay(int retval, unsigned usec, void *appdata) { (void)retval; (void)usec; (void)appdata; }

/* Runs pam_start(_confdir) + pam_authenticate + pam_acct_mgmt. Returns the PAM code; *stage is 0 for
 * start, 1 for authenticate, 2 for account management. confdir NULL means /etc/pam.d. */
static inline int rg_pam_check(const char *service, const char *confdir, const char *user, const char *password,
                               const char *rhost, int *stage) {
    struct rg_pam_credentials creds = { user, password };
    struct pam_conv conv = { rg_pam_conversation, &creds };
    pam_handle_t *h = NULL;
    *stage = 0;
    int rc = confdir ? pam_start_confdir(service, user, &conv, confdir, &h) : pam_start(service, user, &conv, &h);
    if (rc != PAM_SUCCESS) { if (h) pam_end(h, rc); return rc; }
    pam_set_item(h, PAM_FAIL_DELAY, (const void *)rg_pam_no_delay);
    if (rhost) pam_set_item(h, PAM_RHOST, rhost);
    pam_set_item(h, PAM_RUSER, user);
    *stage = 1;
    rc = pam_authenticate(h, PAM_SILENT | PAM_DISALLOW_NULL_AUTHTOK);
    if (rc == PAM_SUCCESS) {
        *stage = 2;
        rc = pam_acct_mgmt(h, PAM_SILENT | PAM_DISALLOW_NULL_AUTHTOK);
    }
    pam_end(h, rc);
    return rc;
}

static inline const char *rg_pam_strerror(int rc) { return pam_strerror(NULL, rc); }
#endif
