/* loom-cuda-info — lists CUDA devices as the CUDA backend sees them, or
 * says in one line why there are none. Exit 0 either way (no GPU is a
 * normal state for CI); exit 1 only if a present device cannot be queried. */
#include <stdio.h>

#include "common/err.h"
#include "kernels/cuda/kn_cuda.h"

int main(void)
{
	int n = 0;
	kn_cuda_device_count(&n);
	if (n == 0) {
		printf("loom-cuda-info: %s\n", *loom_errmsg() ? loom_errmsg() : "no CUDA device");
		return 0;
	}
	for (int i = 0; i < n; i++) {
		kn_cuda_device d;
		if (kn_cuda_device_info(i, &d) != LOOM_OK) {
			fprintf(stderr, "loom-cuda-info: %s\n", loom_errmsg());
			return 1;
		}
		printf("cuda:%d %s sm_%d%d %.1f GiB\n", i, d.name, d.sm_major, d.sm_minor,
		       (double)d.mem_total / (1024.0 * 1024 * 1024));
	}
	return 0;
}
