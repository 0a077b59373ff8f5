/* A stand-in for the CUDA runtime that nvcc's host code calls, so that the plugin's own launch code
 * (grid sizes, shared-memory bytes, kernel parameters, workspace carving) runs on a machine without a
 * GPU. It implements the documented runtime calls our sources use plus the registration and launch
 * entry points nvcc emits (declared in the toolkit's crt/host_runtime.h and crt/device_functions.h);
 * every launch and memory operation is handed to a callback (Python, through ctypes), which runs it in
 * the PTX executor. A runtime call missing here is a link error (the library is linked with -z defs),
 * never a silent no-op. Device attributes come from a table the caller fills. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef struct
{
    unsigned int x, y, z;
} stub_dim3; /* the layout of CUDA's dim3 */

typedef int stub_error; /* cudaError_t: 0 success, 1 cudaErrorInvalidValue */

typedef int (*launch_callback)(const char* name, stub_dim3 grid, stub_dim3 block, size_t shared_bytes, void** args,
    long long shared_granted);
typedef int (*memory_callback)(int op, uint64_t dst, uint64_t src_or_value, uint64_t bytes);

enum
{
    kMaxFunctions = 256,
    kMaxAttributes = 64
};

static struct
{
    const void* host;
    const char* name;
    long long shared_granted;
} g_functions[kMaxFunctions];
static int g_function_count;
static void* g_fatbin_handle;

static int g_attr_ids[kMaxAttributes];
static int g_attr_values[kMaxAttributes];
static int g_attr_count;
static int g_max_shared_attr = -1; /* the cudaFuncAttributeMaxDynamicSharedMemorySize enum value */
static int g_optin_attr = -1;      /* the cudaDevAttrMaxSharedMemoryPerBlockOptin enum value */

static launch_callback g_launch;
static memory_callback g_memory;
static stub_error g_last_error;

static stub_dim3 g_cfg_grid, g_cfg_block;
static size_t g_cfg_shared;
static void* g_cfg_stream;

/* --- set-up from the caller ------------------------------------------------------------------ */
void deformrt_stub_set_callbacks(launch_callback launch, memory_callback memory)
{
    g_launch = launch;
    g_memory = memory;
}

void deformrt_stub_set_attribute(int attribute, int value)
{
    for (int i = 0; i < g_attr_count; ++i)
    {
        if (g_attr_ids[i] == attribute)
        {
            g_attr_values[i] = value;
            return;
        }
    }
    if (g_attr_count < kMaxAttributes)
    {
        g_attr_ids[g_attr_count] = attribute;
        g_attr_values[g_attr_count] = value;
        ++g_attr_count;
    }
}

void deformrt_stub_set_enums(int func_attr_max_dynamic_shared, int dev_attr_shared_optin)
{
    g_max_shared_attr = func_attr_max_dynamic_shared;
    g_optin_attr = dev_attr_shared_optin;
}

/* Clears the sticky error. Opt-ins granted by cudaFuncSetAttribute stay, as they do in a real process
 * (the plugin caches them per device). */
void deformrt_stub_reset(void)
{
    g_last_error = 0;
}

/* --- registration (nvcc's module constructor) -------------------------------------------------- */
void** __cudaRegisterFatBinary(void* fatCubin)
{
    (void) fatCubin;
    return &g_fatbin_handle;
}

void __cudaRegisterFatBinaryEnd(void** handle)
{
    (void) handle;
}

void __cudaUnregisterFatBinary(void** handle)
{
    (void) handle;
}

void __cudaRegisterFunction(void** handle, const char* hostFun, char* deviceFun, const char* deviceName,
    int thread_limit, void* tid, void* bid, void* bDim, void* gDim, int* wSize)
{
    (void) handle;
    (void) deviceName;
    (void) thread_limit;
    (void) tid;
    (void) bid;
    (void) bDim;
    (void) gDim;
    (void) wSize;
    if (g_function_count < kMaxFunctions)
    {
        g_functions[g_function_count].host = hostFun;
        g_functions[g_function_count].name = deviceFun;
        g_functions[g_function_count].shared_granted = 0;
        ++g_function_count;
    }
}

static int find_function(const void* host)
{
    for (int i = 0; i < g_function_count; ++i)
    {
        if (g_functions[i].host == host)
        {
            return i;
        }
    }
    return -1;
}

/* --- launches ------------------------------------------------------------------------------------ */
unsigned __cudaPushCallConfiguration(stub_dim3 grid, stub_dim3 block, size_t shared, void* stream)
{
    g_cfg_grid = grid;
    g_cfg_block = block;
    g_cfg_shared = shared;
    g_cfg_stream = stream;
    return 0;
}

stub_error __cudaPopCallConfiguration(stub_dim3* grid, stub_dim3* block, size_t* shared, void* stream)
{
    *grid = g_cfg_grid;
    *block = g_cfg_block;
    *shared = g_cfg_shared;
    *(void**) stream = g_cfg_stream;
    return 0;
}

stub_error __cudaGetKernel(void** kernel, const void* func)
{
    *kernel = (void*) func;
    return find_function(func) < 0 ? 1 : 0;
}

static stub_error launch(const void* func, stub_dim3 grid, stub_dim3 block, void** args, size_t shared)
{
    int const i = find_function(func);
    if (i < 0 || g_launch == NULL)
    {
        g_last_error = 1;
        return 1;
    }
    int const status = g_launch(g_functions[i].name, grid, block, shared, args, g_functions[i].shared_granted);
    if (status != 0)
    {
        g_last_error = status;
    }
    return status;
}

stub_error __cudaLaunchKernel(void* kernel, stub_dim3 grid, stub_dim3 block, void** args, size_t shared, void* stream)
{
    (void) stream;
    return launch(kernel, grid, block, args, shared);
}

stub_error __cudaLaunchKernel_ptsz(
    void* kernel, stub_dim3 grid, stub_dim3 block, void** args, size_t shared, void* stream)
{
    (void) stream;
    return launch(kernel, grid, block, args, shared);
}

stub_error cudaLaunchKernel(const void* func, stub_dim3 grid, stub_dim3 block, void** args, size_t shared, void* stream)
{
    (void) stream;
    return launch(func, grid, block, args, shared);
}

/* --- runtime API ---------------------------------------------------------------------------------- */
stub_error cudaGetLastError(void)
{
    stub_error const e = g_last_error;
    g_last_error = 0;
    return e;
}

stub_error cudaPeekAtLastError(void)
{
    return g_last_error;
}

stub_error cudaGetDevice(int* device)
{
    *device = 0;
    return 0;
}

stub_error cudaDeviceGetAttribute(int* value, int attribute, int device)
{
    (void) device;
    for (int i = 0; i < g_attr_count; ++i)
    {
        if (g_attr_ids[i] == attribute)
        {
            *value = g_attr_values[i];
            return 0;
        }
    }
    /* an attribute nobody set: a loud failure (the check reports the launch that did not happen) */
    g_last_error = 1;
    return 1;
}

stub_error cudaFuncSetAttribute(const void* func, int attribute, int value)
{
    int const i = find_function(func);
    if (i < 0)
    {
        return 1;
    }
    if (attribute == g_max_shared_attr)
    {
        int optin = 0;
        if (cudaDeviceGetAttribute(&optin, g_optin_attr, 0) != 0 || value > optin || value < 0)
        {
            return 1;
        }
        g_functions[i].shared_granted = value;
        return 0;
    }
    return 1;
}

stub_error cudaMemsetAsync(void* dst, int value, size_t bytes, void* stream)
{
    (void) stream;
    return g_memory == NULL ? 1 : g_memory(0, (uint64_t) (uintptr_t) dst, (uint64_t) (value & 0xff), bytes);
}

stub_error cudaMemcpyAsync(void* dst, const void* src, size_t bytes, int kind, void* stream)
{
    (void) stream;
    (void) kind;
    return g_memory == NULL ? 1 : g_memory(1, (uint64_t) (uintptr_t) dst, (uint64_t) (uintptr_t) src, bytes);
}
