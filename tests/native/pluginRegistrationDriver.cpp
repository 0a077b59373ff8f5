// Driver for tests/test_runtime_native.py: the runtime's registration of TensorRT's own plugins
// (detail::registerTensorRTPlugins) against a stub libnvinfer and, when the test provides one, a stub
// libnvinfer_plugin. Asked twice, as two Engine::load calls would; prints what the runtime's logger gets.
#include "pluginLoader.h"
#include "tensorrtLogger.h"

#include <cstdio>

namespace
{
class PrintingLogger : public deformrt::Logger
{
public:
    void log(deformrt::Severity severity, char const* message) noexcept override
    {
        static char const* const kNames[] = {"error", "warning", "info", "verbose"};
        std::printf("%s: %s\n", kNames[static_cast<int>(severity)], message);
    }
};
} // namespace

int main()
{
    PrintingLogger printing;
    deformrt::detail::TensorRTLogger logger(&printing);
    deformrt::detail::registerTensorRTPlugins(logger);
    deformrt::detail::registerTensorRTPlugins(logger);
    std::printf("done\n");
    return 0;
}
