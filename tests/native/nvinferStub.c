/* Test double for libnvinfer: exactly the two C entry points the deformrt runtime links against
 * (tests/test_runtime_native.py checks that no other TensorRT symbol is needed), so that deformrt-run
 * links and its paths that stop before TensorRT is used (arguments, sidecar, no GPU) can run where
 * TensorRT is not installed. It implements the documented contract minimally: getInferLibVersion
 * reports 10.3.0 in (MAJOR * 100 + MINOR) * 100 + PATCH form, and creating a runtime fails (nullptr),
 * which TensorRT documents as the failure result. */
#include <stdint.h>

int32_t getInferLibVersion(void)
{
    return 100300;
}

void* createInferRuntime_INTERNAL(void* logger, int32_t version)
{
    (void) logger;
    (void) version;
    return 0;
}
