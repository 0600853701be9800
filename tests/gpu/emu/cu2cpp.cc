/* tests/gpu/emu/cu2cpp.cc — rewrites a kernels/cuda .cu file as host C++
 * for the CPU emulation (stdin -> stdout):
 *   - the CUDA headers and emu.h come before kn_cuda_int.cuh,
 *   - kernel<<<grid, block, smem, stream>>>(args) becomes
 *     emu_launch(kernel, grid, block, smem, stream, args),
 *   - extern __shared__ T name[] becomes a pointer to the emulated
 *     dynamic shared memory,
 *   - cudaFuncSetAttribute(kernel<...>, ...) takes the function's address. */
#include <iostream>
#include <iterator>
#include <regex>
#include <string>

int main()
{
	std::string s((std::istreambuf_iterator<char>(std::cin)), std::istreambuf_iterator<char>());
	const std::string inc = "#include \"kn_cuda_int.cuh\"";
	size_t at = s.find(inc);
	if (at != std::string::npos)
		s.replace(at, inc.size(),
			  "#include <cuda_runtime.h>\n#include <cuda_bf16.h>\n#include <cuda_fp16.h>\n"
			  "#include <cublas_v2.h>\n#include \"emu.h\"\n" + inc);
	s = std::regex_replace(s, std::regex(R"(extern __shared__ (?:__align__\(\d+\) )?([\w ]+?) (\w+)\[\];)"),
			       "$1 *$2 = ($1 *)emu_dyn_smem;");
	s = std::regex_replace(s, std::regex(R"(cudaFuncSetAttribute\((\w+<[^>]*>),)"),
			       "cudaFuncSetAttribute((const void *)&$1,");
	std::string out;
	size_t i = 0;
	for (;;) {
		size_t j = s.find("<<<", i);
		if (j == std::string::npos) {
			out += s.substr(i);
			break;
		}
		size_t k = j; /* start of the kernel name, template arguments included */
		if (s[k - 1] == '>') {
			int depth = 0;
			for (k = k - 1;; k--) {
				if (s[k] == '>')
					depth++;
				else if (s[k] == '<' && --depth == 0)
					break;
			}
		}
		size_t start = k;
		while (start > 0 && (isalnum((unsigned char)s[start - 1]) || s[start - 1] == '_' ||
				     s[start - 1] == ':'))
			start--;
		size_t e = s.find(">>>", j);
		if (e == std::string::npos || s[e + 3] != '(') {
			std::cerr << "cu2cpp: launch without arguments near " << s.substr(j, 40) << "\n";
			return 1;
		}
		size_t p = e + 3;
		int depth = 0;
		for (;; p++) {
			if (s[p] == '(')
				depth++;
			else if (s[p] == ')' && --depth == 0)
				break;
		}
		out += s.substr(i, start - i);
		out += "emu_launch(" + s.substr(start, j - start) + ", " + s.substr(j + 3, e - j - 3) +
		       ", " + s.substr(e + 4, p - e - 4) + ")";
		i = p + 1;
	}
	std::cout << out;
	return 0;
}
