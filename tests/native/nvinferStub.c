/* Test double for libnvinfer: exactly the three C entry points the deformrt runtime links against
 * (tests/test_runtime_native.py checks that no other TensorRT symbol is needed), so that deformrt-run
 * links and its paths that stop before TensorRT is used (arguments, sidecar, no GPU) can run where
 * TensorRT is not installed. It implements the documented contract minimally: getInferLibVersion
 * reports 10.3.0 in (MAJOR * 100 + MINOR) * 100 + PATCH form; creating a runtime fails and there is no
 * plugin registry (nullptr, the failure result of both). */
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

void* getPluginRegistry(void)
{
    return 0;
}
