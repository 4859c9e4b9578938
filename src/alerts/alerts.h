/*
 * alerts.h -- budget alerts: thresholds on what an org (or one workspace)
 * spends, and on an org's balance, each crossing told once to a webhook.
 *
 * Kinds (configured through the admin API, `keyrail alert`, the console):
 *
 *   budget   a budget (currency) per period (day or month, UTC) and the
 *            percents of it that alert (e.g. 50,80,100); the spend is the
 *            platform cost debited in the period (BYOK usage is the org's own
 *            bill and never counts). A crossing: (period, percent), so each
 *            percent alerts once per period.
 *   balance  a threshold on the org's balance: a crossing each time the
 *            balance falls below it, after having been at or above it (a
 *            top-up re-arms it).
 *
 * Exactly once across instances: every instance runs the same check (the
 * notifier thread, every [alerts] interval_ms, on its own store connection);
 * a crossing is a row in alert_deliveries, unique per (alert, crossing), so
 * only the instance whose insert lands owns it; a balance crossing is first
 * won by a conditional update of the alert (armed -> disarmed). A delivery
 * is claimed (a conditional update with a lease) before it is sent, so two
 * instances never send the same one at the same time.
 *
 * A delivery: POST of the JSON body fixed when the crossing was recorded
 * (retries send the same bytes), with
 *   X-Keyrail-Event: budget.crossed | balance.below
 *   X-Keyrail-Delivery: <delivery id>
 *   X-Keyrail-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>
 * where the secret is the alert's own (shown once, at create; stored sealed
 * under the master key). A 2xx delivers it; anything else is retried with
 * exponential backoff (1 s doubling to 1 h) up to [alerts] max_attempts, then
 * marked failed. The delivery log (status, attempts, last status and error)
 * is in the admin API. Webhook URLs naming loopback, private or link-local
 * addresses are refused at send time unless [alerts] allow_private_urls.
 */
#ifndef KR_ALERTS_H
#define KR_ALERTS_H

#include <stdbool.h>

#include "config/config.h"
#include "secrets/secrets.h"
#include "store/store.h"

typedef struct kr_notifier kr_notifier;

/* Starts the notifier thread (its own store connection). */
int kr_notifier_start(kr_notifier **out, const kr_config *cfg, const kr_master_key *mk, kr_diag *d);
void kr_notifier_stop(kr_notifier *n);

/* Pure parts (the ops and the tests use them). */
/* "50,80,100": 1..10 percents, each 1..1000, strictly increasing; rewritten
 * canonical into out. */
int kr_alert_percents_parse(const char *in, char *out, size_t cap, kr_diag *d);
/* The signature header's value for body at unix time t. */
void kr_alert_sign(const char *secret, size_t slen, int64_t t, const char *body, size_t n,
                   char out[96]);
/* The associated data a secret is sealed under: the alert's id. */
#define KR_ALERT_SECRET_KEY "alert-webhook-secret"

#endif
