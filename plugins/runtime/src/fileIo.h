// Whole-file reads and atomic writes shared by the .npy, sidecar and engine readers.
#pragma once

#include "deformrt/status.h"

#include <string>

namespace deformrt
{
namespace detail
{

Expected<std::string> readFile(std::string const& path);

//! Write to "<path>.tmp.<pid>" and rename it over `path`, so readers never see a partial file.
Status writeFileAtomic(std::string const& path, std::string const& bytes);

} // namespace detail
} // namespace deformrt
