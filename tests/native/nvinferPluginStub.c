/* Test double for libnvinfer_plugin.so.<major>: only initLibNvInferPlugins, as NvInferPlugin.h declares it
 * (register TensorRT's plugins with the given logger and namespace; true on success). It prints the call,
 * so the test sees how often, and with what, the runtime registers them. */
#include <stdbool.h>
#include <stdio.h>

bool initLibNvInferPlugins(void* logger, char const* libNamespace)
{
    printf("initLibNvInferPlugins(logger %s, namespace '%s')\n", logger ? "given" : "null", libNamespace);
    return true;
}
