/*
 * unit_realloc.h: realloc that fails on demand, for a test linked with
 * unit_realloc.o and -Wl,--wrap=realloc (the Makefile's test_control and
 * test_state): while unit_realloc_fails is set, every realloc returns NULL
 * (ENOMEM), as a strbuf finds when memory runs out.
 */
#ifndef QPROXY_UNIT_REALLOC_H
#define QPROXY_UNIT_REALLOC_H

#include <stdbool.h>

extern bool	unit_realloc_fails;

#endif
