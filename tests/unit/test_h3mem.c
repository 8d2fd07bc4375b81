/*
 * test_h3mem.c: the allocator qproxy gives nghttp3 counts what nghttp3
 * holds (stats buffers h3_bytes); whatever malloc hands out, the count
 * comes back to where it was once every block is freed.
 */
#include <stdlib.h>
#include <string.h>

#include "conn.h"
#include "unit.h"

#define NBLOCKS	512

/*
 * nghttp3's blocks among plain ones of near sizes, freed out of order, so
 * that malloc reuses chunks a little larger than asked for: a block asked
 * for as 256 bytes may have 280.
 */
static void
test_count_returns_to_start(void)
{
	const nghttp3_mem *mem = h3_mem();
	void *h3[NBLOCKS] = { 0 }, *plain[NBLOCKS] = { 0 };
	size_t start = h3_mem_live();
	int i, k, round;

	unit_seed = 1;

	for (round = 0; round < 200; round++) {
		for (k = 0; k < 64; k++) {
			i = (int)(unit_rand() % NBLOCKS);
			switch (unit_rand() % 6) {
			case 0:
				free(plain[i]);
				plain[i] = malloc(8 + unit_rand() % 1100);
				break;
			case 1:
				mem->free(h3[i], NULL);
				h3[i] = NULL;
				break;
			case 2:
				h3[i] = mem->realloc(h3[i], 1 + unit_rand() % 1500,
				    NULL);
				break;
			case 3:
				mem->free(h3[i], NULL);
				h3[i] = mem->calloc(1, 1 + unit_rand() % 1100,
				    NULL);
				break;
			default:
				mem->free(h3[i], NULL);
				h3[i] = mem->malloc(1 + unit_rand() % 1100, NULL);
				break;
			}
		}
	}
	for (i = 0; i < NBLOCKS; i++) {
		mem->free(h3[i], NULL);
		free(plain[i]);
	}
	CHECK_EQ_INT(h3_mem_live(), start);
	h3_mem_drain();
	CHECK_EQ_INT(h3_mem_kept(), 0);
}

int
main(void)
{
	test_count_returns_to_start();
	UNIT_DONE();
}
