/* stats.c: the counters. */
#include "stats.h"

struct stats stats;
