/*
 * asan.h: marks memory that a free list keeps as unusable for
 * AddressSanitizer, so that a use after "free" of a cached object is still
 * caught in the sanitizer runs. Without ASan these do nothing.
 */
#ifndef QPROXY_ASAN_H
#define QPROXY_ASAN_H

#if defined(__SANITIZE_ADDRESS__)
#define QPROXY_ASAN	1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define QPROXY_ASAN	1
#endif
#endif

#ifdef QPROXY_ASAN
#include <sanitizer/asan_interface.h>
#define asan_poison(p, n)	ASAN_POISON_MEMORY_REGION((p), (n))
#define asan_unpoison(p, n)	ASAN_UNPOISON_MEMORY_REGION((p), (n))
#else
#define asan_poison(p, n)	((void)(p), (void)(n))
#define asan_unpoison(p, n)	((void)(p), (void)(n))
#endif

#endif
