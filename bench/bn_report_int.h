/*
 * bench/bn_report_int.h — helpers shared by bn_report.c and
 * bn_report_turns.c only.
 */
#ifndef BN_REPORT_INT_H
#define BN_REPORT_INT_H

#include <jansson.h>

#include "bench/bn_stats.h"

/* A JSON real, or null when v is not finite. */
json_t *bn_num_or_null(double v);
/* count, mean, stddev, min, p50, p90, p99, max as a new object, or NULL on ENOMEM. */
json_t *bn_summary_json(const bn_summary *s);

#endif
