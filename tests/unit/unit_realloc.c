/* unit_realloc.c: see unit_realloc.h. */
#include <errno.h>
#include <stddef.h>

#include "unit_realloc.h"

bool	 unit_realloc_fails;

void	*__real_realloc(void *, size_t);
void	*__wrap_realloc(void *, size_t);

void *
__wrap_realloc(void *p, size_t n)
{
	if (unit_realloc_fails) {
		errno = ENOMEM;
		return NULL;
	}
	return __real_realloc(p, n);
}
