/* kernels/cpu/embed.c — embedding row gather. */
#include "../kernels.h"

#include <string.h>

void kn_embed(float *out, const float *table, const int32_t *ids, int n, int d)
{
	for (int i = 0; i < n; i++)
		memcpy(out + (size_t)i * d, table + (size_t)ids[i] * d, sizeof(float) * (size_t)d);
}
