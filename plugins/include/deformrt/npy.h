// Reading and writing numpy .npy files (format versions 1.0, 2.0 and 3.0, C order, little-endian).
// Every malformed, truncated or unsupported file is an error value naming the file and the reason;
// nothing here aborts, throws or prints.
#pragma once

#include "deformrt/hostTensor.h"
#include "deformrt/status.h"

#include <cstddef>
#include <string>

namespace deformrt
{

//! Parse a whole .npy file held in memory; `source` names it in error messages.
Expected<HostTensor> parseNpy(std::byte const* bytes, std::size_t size, std::string const& source);

Expected<HostTensor> readNpy(std::string const& path);

//! The file's bytes: version 1.0 unless the header needs 2.0, header padded as numpy pads it.
Expected<std::string> serializeNpy(HostTensor const& tensor);

//! Write through a temporary file and a rename, so a failed write never leaves a truncated .npy.
Status writeNpy(std::string const& path, HostTensor const& tensor);

} // namespace deformrt
